"""The key/value cache of self-attention that grows in place, for step-by-step decoding (`KVCache`); caches of a
batch whose rows sit at different positions are in `folio.nn.kv_rows`."""

from __future__ import annotations

from torch import Tensor


class KVCache:
    """A self-attention key/value cache that grows in place, for step-by-step decoding.

    Keys and values live in buffers (B, kv_heads, capacity, head_dim) with room for later positions, so a
    step writes its new positions into the room instead of copying the whole cache (`torch.cat`: O(S) per
    step, O(S²) over a text); the capacity doubles when it runs out. It reads as the (keys, values) pair of
    (B, kv_heads, S, head_dim) views it stands for:

        >>> cache = KVCache.growing((torch.zeros(1, 2, 5, 4), torch.zeros(1, 2, 5, 4)))
        >>> keys, values = cache.extend(torch.ones(1, 2, 1, 4), torch.ones(1, 2, 1, 4))
        >>> keys.shape, keys[0, 0, -1, 0].item()
        (torch.Size([1, 2, 6, 4]), 1.0)

    Extending writes past this cache's length in the shared buffers, so of two continuations of one cache
    only the last extended stays valid: decoding and evaluation never branch a cache (beam search reorders
    plain (keys, values) pairs with `index_select`, which copies).
    """

    __slots__ = ("_keys", "_values", "length", "limit")

    def __init__(self, keys: Tensor, values: Tensor, length: int, limit: int | None = None):
        self._keys, self._values, self.length = keys, values, length  # buffers (B, kv_heads, capacity, d)
        self.limit = limit

    @classmethod
    def growing(cls, cache: KVCache | tuple[Tensor, Tensor], room: int = 1, limit: int | None = None,
                capacity: int | None = None) -> KVCache:
        """`cache` as a growing cache with room for at least `room` more positions (itself if it is one);
        `limit`: the most positions it will ever hold (a model's context), so the doubling stops there.
        `capacity`: room for that many positions in all, allocated now (a copy of a growing cache with less),
        instead of the doubling's."""
        if isinstance(cache, KVCache) and (capacity is None or cache._keys.size(2) >= capacity):
            return cache
        keys, values = cache
        length = keys.size(2)
        if capacity is None:
            capacity = min(max(2 * length, 64), limit or 1 << 62)
        capacity = max(capacity, length + room)
        buffers = [t.new_empty(*t.shape[:2], capacity, t.size(3)) for t in (keys, values)]
        for buffer, t in zip(buffers, (keys, values), strict=True):
            buffer[:, :, :length] = t
        return cls(*buffers, length, limit)

    def extend(self, keys: Tensor, values: Tensor) -> KVCache:
        """The cache with `keys`/`values` (B, kv_heads, T, d) appended after this one's positions."""
        steps = keys.size(2)
        cache = self.with_room(steps)
        cache._keys[:, :, cache.length : cache.length + steps] = keys
        cache._values[:, :, cache.length : cache.length + steps] = values
        return cache.advanced(steps)

    def with_room(self, steps: int) -> KVCache:
        """This cache, or where it is out of room a copy with double the room (the views handed out keep the old
        buffers), with room for `steps` more positions: a kernel then writes them into `buffers` at `length`,
        and `advanced(steps)` is the cache that holds them."""
        if self.length + steps <= self._keys.size(2):
            return self
        return KVCache.growing((self.keys, self.values), room=steps, limit=self.limit)

    @property
    def buffers(self) -> tuple[Tensor, Tensor]:
        """The keys' and values' buffers (B, kv_heads, capacity, d), positions past `length` unwritten."""
        return self._keys, self._values

    def advanced(self, steps: int) -> KVCache:
        """The cache of this one's positions and the `steps` written after them into its buffers."""
        return KVCache(self._keys, self._values, self.length + steps, self.limit)

    def truncate(self, length: int) -> KVCache:
        """The cache of the first `length` positions (the later ones are overwritten by the next `extend`)."""
        return KVCache(self._keys, self._values, min(length, self.length), self.limit)

    @property
    def keys(self) -> Tensor:
        return self._keys[:, :, : self.length]  # (B, kv_heads, S, d)

    @property
    def values(self) -> Tensor:
        return self._values[:, :, : self.length]

    def __iter__(self):
        return iter((self.keys, self.values))

    def __getitem__(self, index: int) -> Tensor:
        return (self.keys, self.values)[index]

    def __len__(self) -> int:
        return 2
