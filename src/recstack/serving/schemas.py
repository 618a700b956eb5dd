"""Request and response bodies of the HTTP service (pydantic: validated, in the OpenAPI)."""

from __future__ import annotations

from typing import Annotated, Any

from recstack.optional import needs

with needs("serve", "recstack.serving"):
    from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

MAX_K = 100  # schema bound; a bundle with a smaller pipeline.max_k clamps k (with a warning)
MAX_HISTORY = 500
MAX_IDS = 1000

def _integral(v: Any) -> Any:
    """JSON Schema counts 1.0 as an integer: accept integral floats as ints (models are strict
    otherwise: "10" is not 10, 0 is not false)."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


Int = Annotated[int, BeforeValidator(_integral)]
# raw ids are ints or strings, as in the training data
RawId = Int | Annotated[str, Field(max_length=256)]
ContextValue = bool | int | float | Annotated[str, Field(max_length=256)]


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # no coercion: 0 is not false

    exclude_items: list[RawId] = Field(default_factory=list, max_length=MAX_IDS,
                                       description="item ids never to return")
    categories: list[Annotated[str, Field(max_length=256)]] = Field(
        default_factory=list, max_length=64, description="return only items of these categories")
    exclude_categories: list[Annotated[str, Field(max_length=256)]] = Field(
        default_factory=list, max_length=64, description="never return items of these categories")


class RecommendRequest(BaseModel):
    """A user id, a list of recent items, or both; neither = the cold-start path."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={
        "examples": [{"user_id": 1, "k": 10}, {"history": [1, 32, 260], "k": 5, "explain": True}]})

    user_id: RawId | None = Field(None, description="known user id; unknown ids are ignored with a warning")
    session_id: Annotated[str, Field(max_length=256)] | None = Field(
        None, description="anonymous session id: the A/B assignment unit when there is no user_id")
    history: list[RawId] = Field(default_factory=list, max_length=MAX_HISTORY,
                                 description="recent item ids, oldest first")
    k: Int = Field(10, ge=1, le=MAX_K, description="number of items (clamped to the bundle's max_k)")
    filters: Filters = Field(default_factory=Filters)
    context: dict[Annotated[str, Field(max_length=64)], ContextValue] = Field(
        default_factory=dict, max_length=64, description="request context passed to the rankers")
    explain: bool = Field(False, description="include per-stage scores and source ranks per item")


class RecommendedItem(BaseModel):
    item_id: int | str
    title: str | None = Field(None, description="catalogue title (absent when the bundle has no titles)")
    categories: list[str] | None = Field(
        None, description="catalogue categories, e.g. genres (absent when the bundle has none)")
    score: float | None = Field(description="final re-ranking score (None for promoted items)")
    sources: list[str] = Field(description="candidate sources that proposed the item")
    rule: str = Field(description="re-ranking rule that placed it: score, freshness, mmr, category_cap, promoted")
    stage_scores: dict[str, float | None] | None = None
    source_ranks: dict[str, int] | None = None


class RecommendResponse(BaseModel):
    items: list[RecommendedItem]
    warnings: list[str]
    cold_start: bool
    bundle_version: str
    timings_ms: dict[str, float]
    counts: dict[str, int]
    skipped_stages: list[str]
    returned: int = Field(description="number of items returned (fewer than k only with a `note`)")
    note: str | None = Field(None, description="why fewer than the requested k items came back "
                                               "(None when k did)")
    degraded: str | None = Field(None, description="why the answer is not the full pipeline's (None when it is): "
                                 "queueing left too little of the request's deadline, so the costliest "
                                 "stages were skipped, e.g. `skipped fine ranking, answered from coarse "
                                 "scores: 12 ms left of 200`")
    request_id: str = Field(description="echoes X-Request-ID, or a generated id; quote it in /feedback")
    variant: str = Field(description="A/B variant that served the request (`default` without an experiment)")
    experiment: str | None = Field(None, description="experiment name (None without an experiment)")


class FeedbackRequest(BaseModel):
    """What the user did with a recommendation: a click and/or a reward for one item."""

    # the two "at least one of" rules the endpoint enforces, stated in the OpenAPI schema too
    # (so clients and schema-driven tests know a body without them is invalid)
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"allOf": [
        {"anyOf": [{"required": ["request_id"], "properties": {"request_id": {"type": "string"}}},
                   {"required": ["user_id"], "properties": {"user_id": {"not": {"type": "null"}}}},
                   {"required": ["session_id"], "properties": {"session_id": {"type": "string"}}}]},
        {"anyOf": [{"required": ["click"], "properties": {"click": {"type": "boolean"}}},
                   {"required": ["reward"], "properties": {"reward": {"type": "number"}}}]},
    ]})

    request_id: Annotated[str, Field(max_length=128)] | None = Field(
        None, description="the `request_id` of the /recommend answer (joins impression and feedback)")
    user_id: RawId | None = None
    session_id: Annotated[str, Field(max_length=256)] | None = None
    variant: Annotated[str, Field(max_length=64)] | None = Field(
        None, description="the `variant` of the /recommend answer (default: recomputed from user / session)")
    item_id: RawId | None = None
    # bounds inside the Annotated type so the OpenAPI schema carries them (on an Optional's
    # Field they apply to the value but are not stated in the schema)
    position: Annotated[int, Field(ge=0, le=MAX_K - 1), BeforeValidator(_integral)] | None = Field(
        None, description="0-based slot of the item")
    click: bool | None = None
    reward: Annotated[float, Field(ge=-1e9, le=1e9, allow_inf_nan=False)] | None = Field(
        None, description="any numeric outcome (default: 1 for a click, 0 otherwise)")


class FeedbackResponse(BaseModel):
    logged: bool
    request_id: str | None
    variant: str | None
    experiment: str | None


class VariantInfo(BaseModel):
    name: str
    weight: float
    share: float
    bundle_version: str | None
    path: str


class ABTestInfo(BaseModel):
    name: str | None = Field(description="None when serving one bundle without an experiment")
    control: str
    variants: list[VariantInfo]
    event_log: bool


class SimilarItem(BaseModel):
    item_id: int | str
    title: str | None = Field(None, description="catalogue title (absent when the bundle has no titles)")
    categories: list[str] | None = Field(None, description="catalogue categories (absent when none)")
    score: float


class SimilarResponse(BaseModel):
    item_id: int | str
    items: list[SimilarItem]
    source: str
    bundle_version: str
    variant: str = Field(description="the variant that answered (an experiment's control)")


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    ready: bool
    bundle_version: str | None
    reason: str | None = None


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # no coercion: 0 is not false

    path: Annotated[str, Field(max_length=4096)] | None = Field(
        None, description="bundle directory; default: the path served (re-resolving symlinks)")
    variant: Annotated[str, Field(max_length=64)] | None = Field(
        None, description="A/B variant to swap (required when an experiment has several)")


class ReloadResponse(BaseModel):
    previous_version: str
    version: str
    path: str
    seconds: float
    variant: str


class ErrorBody(BaseModel):
    """`detail`: a message, or FastAPI's list of validation errors (location, message, ...)."""

    detail: str | list[dict[str, Any]]
