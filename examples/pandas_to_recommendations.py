"""pandas DataFrame -> model -> recommendations with raw ids and titles.

Reads the MovieLens ratings shipped inside recstack with pandas (any DataFrame with a user and an
item column will do), keeps the ratings of 4 stars and up as interactions, fits item-kNN and
prints the top-5 movies, by their MovieLens ids and titles, for two users. Runs in seconds on a
CPU:

    python examples/pandas_to_recommendations.py

The bundled MovieLens data is for non-commercial use (GroupLens' terms, in the data folder's
README.txt).
"""

# requires: pandas

from __future__ import annotations

import pandas as pd

from recstack.data import Interactions
from recstack.data.readers import embedded_path
from recstack.models import ItemKNN


def main() -> None:
    """Build the DataFrame, fit, print two users' top-5 with titles."""
    folder = embedded_path()
    ratings = pd.read_csv(folder / "ratings.csv")  # userId, movieId, rating, timestamp
    movies = pd.read_csv(folder / "movies.csv").set_index("movieId")["title"]
    liked = ratings[ratings["rating"] >= 4.0]

    # raw ids stay raw: users are MovieLens userIds, items movieIds
    data = Interactions.from_pandas(liked, user="userId", item="movieId", timestamp="timestamp",
                                    rating="rating")
    print(f"{len(data):,} interactions, {data.n_users:,} users, {data.n_items:,} movies")
    model = ItemKNN(k=100, device="cpu").fit(data)  # `fit(liked)` works too for user_id / item_id columns

    users = [1, 2]
    items, scores = model.recommend(users, k=5)  # seen movies excluded
    for user, row, row_scores in zip(users, items, scores, strict=True):
        print(f"\nuser {user}:")
        for rank, (movie, score) in enumerate(zip(row, row_scores, strict=True), start=1):
            print(f"  {rank}. movie {movie:>6}  {movies.get(movie, '?')}  (score {score:.3f})")


if __name__ == "__main__":
    main()
