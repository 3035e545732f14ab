# pragma version 0.4.3
# pragma evm-version cancun
"""
@title Task queue
@notice Queued tasks in constant gas, however many wait.
        Tasks are filed under one "key" model and a bucket of fee per unit of
        work (the bucket is floor(log2(fee per unit))). Inside a bucket tasks
        wait first in, first out, in a doubly linked list; a 256-bit map per
        model marks the buckets that hold something, so the best-paying bucket
        is found by a binary search over one word instead of a loop over tasks.
        Queue order is best bucket first, then first in, first out.
        A sweep cursor per model marks where the next look beyond the first few
        tasks resumes: scan after scan it walks the whole queue in queue order,
        so every waiting task is looked at again however many tasks stand
        before it (see TaskNetwork._take_queued).
"""


struct Entry:
    prev: bytes32
    next: bytes32
    model: bytes32
    bucket: uint256


# @notice Where each queued task sits (zeroed fields mean "not queued").
entries: HashMap[bytes32, Entry]

# @notice First and last task of each (model, bucket) list.
heads: HashMap[bytes32, HashMap[uint256, bytes32]]
tails: HashMap[bytes32, HashMap[uint256, bytes32]]

# @notice Bit b set = bucket b of that model holds at least one task.
bitmap: HashMap[bytes32, uint256]

# @notice The queue of any-of tasks (TaskNetwork's ANY_QUEUE): a key no model may use.
ANY_QUEUE: constant(bytes32) = keccak256("gridtask: the any-of queue")
# @notice queued_count counts the any-of queue's tasks again in units of this, so that the
#         one read that says whether anything waits also says whether any-of tasks do.
ANY_ONE: constant(uint256) = 2**128

# @notice How many tasks wait, all models together (+ ANY_ONE per any-of task).
queued_count: uint256

# @notice Per model, the task the next sweep starts at; empty = the sweep starts over,
#         right after the first tasks of the queue (which every scan looks at anyway).
cursor: HashMap[bytes32, bytes32]


@internal
def push(task: bytes32, model: bytes32, fee_per_unit: uint256):
    """@dev Append at the tail of its bucket."""
    bucket: uint256 = self._msb(fee_per_unit)
    tail: bytes32 = self.tails[model][bucket]
    self.entries[task] = Entry(prev=tail, next=empty(bytes32), model=model, bucket=bucket)
    if tail == empty(bytes32):
        self.heads[model][bucket] = task
        self.bitmap[model] |= (1 << bucket)
    else:
        self.entries[tail].next = task
    self.tails[model][bucket] = task
    self.queued_count += 1 + (convert(model == ANY_QUEUE, uint256) << 128)


@internal
def remove(task: bytes32):
    """@dev Unlink from anywhere in its list; the bucket's bit clears when it empties. A
    cursor on the task moves on to the task after it, so the sweep keeps its place."""
    entry: Entry = self.entries[task]
    if self.cursor[entry.model] == task:
        self.cursor[entry.model] = self.after(task)
    if entry.prev == empty(bytes32):
        self.heads[entry.model][entry.bucket] = entry.next
    else:
        self.entries[entry.prev].next = entry.next
    if entry.next == empty(bytes32):
        self.tails[entry.model][entry.bucket] = entry.prev
    else:
        self.entries[entry.next].prev = entry.prev
    if self.heads[entry.model][entry.bucket] == empty(bytes32):
        self.bitmap[entry.model] &= ~(1 << entry.bucket)
    self.entries[task] = empty(Entry)
    self.queued_count -= 1 + (convert(entry.model == ANY_QUEUE, uint256) << 128)


@internal
def set_cursor(model: bytes32, task: bytes32):
    """@dev Where the next sweep of `model` starts (empty: start over)."""
    self.cursor[model] = task


@internal
@view
def first(model: bytes32) -> bytes32:
    """@dev The oldest task of the best-paying bucket of `model`, or empty."""
    bits: uint256 = self.bitmap[model]
    if bits == 0:
        return empty(bytes32)
    return self.heads[model][self._msb(bits)]


@internal
@view
def after(task: bytes32) -> bytes32:
    """@dev The task after `task` in queue order: the next in its bucket, else the
    head of the next lower non-empty bucket of the same model, else empty."""
    entry: Entry = self.entries[task]
    if entry.next != empty(bytes32):
        return entry.next
    lower: uint256 = self.bitmap[entry.model] & ((1 << entry.bucket) - 1)
    if lower == 0:
        return empty(bytes32)
    return self.heads[entry.model][self._msb(lower)]


@internal
@pure
def _msb(x: uint256) -> uint256:
    """@dev Index of the highest set bit (0 for 0 and 1), by binary search: flat gas."""
    r: uint256 = 0
    v: uint256 = x
    for s: uint256 in [128, 64, 32, 16, 8, 4, 2, 1]:
        if v >> s != 0:
            v = v >> s
            r += s
    return r
