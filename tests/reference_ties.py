"""Independent reference of the evaluation's tie rule: the documented hash in plain Python
integers (no torch), shared by the full-ranking and sampled-protocol tests."""

M32 = 0xFFFFFFFF


def ref_tie_key(user: int, item: int, seed: int = 0) -> int:
    """Priority of ``item`` among equal scores for ``user`` (larger ranks first)."""
    mixed = ((user * 0x85EBCA77) & M32) ^ ((seed * 0xC2B2AE3D) & M32)
    x = (item * 0x9E3779B1 + mixed + 0x632BE5AB) & M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    return x ^ (x >> 16)
