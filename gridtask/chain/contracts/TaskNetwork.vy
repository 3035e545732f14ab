# pragma version 0.4.3
# pragma evm-version cancun
"""
@title TaskNetwork
@notice The chain's part of gridtask: the node registry and its stakes, task
        creation and escrow, node selection and the queue, validation,
        settlement and the events that tell everyone what happened.
        Money is pulled, never pushed: every payment or refund is credited to
        `balanceOf` and taken out with `withdraw`. At every moment the
        contract holds exactly the fees of unfinished tasks, plus the stakes,
        plus what is owed and not yet withdrawn.
@dev    Gas stays flat as the network grows: nodes sit in one array per model
        they serve, selection probes a bounded number of random entries of the
        smallest array among the task's models, and the queue is a bucketed
        FIFO with a sweep (see task_queue.vy). What a task requires (models,
        VRAM, GPU) is kept in the `TaskCreated` event, and in storage only while
        it waits.
        A task's key on chain is keccak(creator ‖ commitment), packed: 20
        address bytes then 32 commitment bytes (gridtask.crypto.task_key).
        Binding it to the creator means nobody who sees a pending createTask can
        take its commitment or nonce first and make it revert.
"""

import task_queue

initializes: task_queue


# ---------------------------------------------------------------- events

# In every task event `commitment` is the task's key, keccak(creator ‖ commitment):
# the field keeps its name so that event readers filter on it unchanged.

# @notice A node joined with its stake and capabilities.
event NodeJoined:
    node: indexed(address)
    stake: uint256
    gpu: bytes32
    vram: uint256
    models: DynArray[bytes32, MAX_NODE_MODELS]
    public_key: bytes32
    version: uint256

# @notice A node stopped taking new tasks.
event NodePaused:
    node: indexed(address)

# @notice A busy node asked to pause: when its task ends it pauses instead of taking work.
event NodePauseRequested:
    node: indexed(address)

# @notice A paused node takes tasks again.
event NodeResumed:
    node: indexed(address)

# @notice A node left; its stake is credited to its balance.
event NodeQuit:
    node: indexed(address)
    stake: uint256

# @notice A task was created; its requirements and sampling seed live here.
event TaskCreated:
    commitment: indexed(bytes32)
    creator: indexed(address)
    task_type: uint256
    nonce: bytes32
    seed: bytes32
    fee: uint256
    task_size: uint256
    timeout: uint256
    model_ids: DynArray[bytes32, MAX_TASK_MODELS]
    min_vram: uint256
    required_gpu: bytes32
    params_hash: bytes32

# @notice No node could take the task now; it waits for one.
event TaskQueued:
    commitment: indexed(bytes32)
    creator: indexed(address)
    key_model: indexed(bytes32)
    fee_per_unit: uint256

# @notice A node was selected for the task.
event TaskStarted:
    commitment: indexed(bytes32)
    node: indexed(address)
    creator: indexed(address)

# @notice The node committed its score and the hash of its encrypted result.
event TaskScoreReady:
    commitment: indexed(bytes32)
    node: indexed(address)
    creator: indexed(address)
    score: bytes32
    result_hash: bytes32

# @notice The node found the task's parameters unrunnable; the fee is refunded.
event TaskErrorReported:
    commitment: indexed(bytes32)
    node: indexed(address)
    creator: indexed(address)
    error_code: uint256

# @notice The creator accepted the score; the node may deliver the result.
event TaskValidated:
    commitment: indexed(bytes32)
    node: indexed(address)
    creator: indexed(address)

# @notice The result was delivered; the fee is credited to the node.
event TaskSuccess:
    commitment: indexed(bytes32)
    node: indexed(address)
    creator: indexed(address)
    fee: uint256

# @notice The task ended without a result; the fee is refunded to the creator.
event TaskAborted:
    commitment: indexed(bytes32)
    by: indexed(address)
    creator: indexed(address)
    reason: String[64]

# @notice Someone took out what the contract owed them, paid to `recipient`.
event Withdrawal:
    account: indexed(address)
    recipient: indexed(address)
    amount: uint256


# ---------------------------------------------------------------- constants

# @notice At most this many models per task and per node.
MAX_TASK_MODELS: constant(uint256) = 4
MAX_NODE_MODELS: constant(uint256) = 8
# @dev Inputs are decoded with room to spare, so an over-long list gets a readable revert.
MAX_MODELS_INPUT: constant(uint256) = 16

# @notice Random entries selection looks at before it gives up and queues the task
#         (a model served by this many nodes or fewer is searched exhaustively).
MAX_PROBES: constant(uint256) = 16
# @notice Queued tasks a node looks at per model it serves: the first QUEUE_SCAN of
#         the queue (best-paying first), then SWEEP_SCAN from the model's sweep cursor.
QUEUE_SCAN: constant(uint256) = 4
SWEEP_SCAN: constant(uint256) = 4

# @notice The longest `max_timeout` a deployment accepts (seconds, about 136 years):
#         block.timestamp + timeout then fits the 64-bit deadline field for ever.
MAX_TIMEOUT_LIMIT: constant(uint256) = 4294967295  # 2**32 - 1

# Task states (mirrored by gridtask.types.TaskState).
QUEUED: constant(uint256) = 1
STARTED: constant(uint256) = 2
SCORE_READY: constant(uint256) = 3
VALIDATED: constant(uint256) = 4
SUCCESS: constant(uint256) = 5
ABORTED: constant(uint256) = 6
ERRORED: constant(uint256) = 7

# Node statuses (mirrored by gridtask.types.NodeStatus).
IDLE: constant(uint256) = 1
BUSY: constant(uint256) = 2
PAUSED: constant(uint256) = 3

# Bit layout of the packed words read on hot paths (one storage read each).
STATE_MASK: constant(uint256) = 2**8 - 1
TIME_MASK: constant(uint256) = 2**64 - 1
DEADLINE_SHIFT: constant(uint256) = 8
TIMEOUT_SHIFT: constant(uint256) = 72
VRAM_MASK: constant(uint256) = 2**32 - 1
VRAM_SHIFT: constant(uint256) = 8
WEIGHT_MASK: constant(uint256) = 2**96 - 1
WEIGHT_SHIFT: constant(uint256) = 40
# A 32-bit tag of the GPU's name and a 64-bit filter of the models served ride along in
# node_info, so that a selection probe usually rejects a node from that one word.
TAG_MASK: constant(uint256) = 2**32 - 1
GPU_TAG_SHIFT: constant(uint256) = 136
BLOOM_SHIFT: constant(uint256) = 168
# Set while a busy node has asked to pause after its task (above the other fields).
PAUSE_REQUESTED: constant(uint256) = 2**255


# ---------------------------------------------------------------- storage

struct Task:
    creator: address
    node: address
    fee: uint256
    # state | deadline << 8 | timeout << 72: what changes on every step, in one slot
    meta: uint256
    score: bytes32
    result_hash: bytes32

struct Node:
    stake: uint256
    gpu: bytes32
    public_key: bytes32
    version: uint256

# @dev What a waiting task requires, kept only while it waits.
struct Wanted:
    models: DynArray[bytes32, MAX_TASK_MODELS]
    min_vram: uint256
    gpu: bytes32
    fee_per_unit: uint256

# @notice The least stake a node must put up to join (wei).
min_stake: public(immutable(uint256))
# @notice Selection weight is the stake, capped at this multiple of `min_stake`.
stake_cap_multiple: public(immutable(uint256))
# @notice Bounds on a task's timeout (seconds); every stage's deadline derives from it.
min_timeout: public(immutable(uint256))
max_timeout: public(immutable(uint256))
# @notice The relay's account: the only one that may report a result delivered.
relay: public(immutable(address))

# @notice Tasks by key: keccak(creator ‖ commitment), commitment = keccak(task ID ‖ nonce).
tasks: HashMap[bytes32, Task]
# @notice Nonces each creator has used: never accepted twice from the same creator.
nonce_used: public(HashMap[address, HashMap[bytes32, bool]])
# @notice What the contract owes each account (payments, refunds, returned stakes).
balanceOf: public(HashMap[address, uint256])

# @notice Registered nodes: stake, GPU, encryption key and version.
nodes: HashMap[address, Node]
# @notice Per node, one word read on hot paths: status | vram << 8 | capped stake << 40
#         | GPU tag << 136 | model filter << 168 | PAUSE_REQUESTED.
node_info: HashMap[address, uint256]
# @notice The models each node serves.
node_models: HashMap[address, DynArray[bytes32, MAX_NODE_MODELS]]
# @notice Active (idle or busy) nodes per model: an array with 1-based positions.
model_nodes: HashMap[bytes32, HashMap[uint256, address]]
# @notice How many active nodes serve each model.
model_node_count: public(HashMap[bytes32, uint256])
# @notice A node's 1-based position in each of its models' arrays (0: not there).
node_model_pos: HashMap[address, HashMap[bytes32, uint256]]

# @notice What each queued task requires, by task key (cleared when it leaves the queue).
wanted: HashMap[bytes32, Wanted]


# ---------------------------------------------------------------- constructor

@deploy
def __init__(
    _min_stake: uint256,
    _stake_cap_multiple: uint256,
    _min_timeout: uint256,
    _max_timeout: uint256,
    _relay: address,
):
    """
    @param _min_stake The least stake (wei) a node must put up.
    @param _stake_cap_multiple Stakes above this multiple of the minimum add no weight.
    @param _min_timeout Shortest task timeout accepted (seconds).
    @param _max_timeout Longest task timeout accepted (seconds, at most MAX_TIMEOUT_LIMIT).
    @param _relay The relay's account, which reports results delivered.
    """
    assert _min_stake > 0, "config: minimum stake must be positive"
    assert _stake_cap_multiple > 0, "config: stake cap multiple must be positive"
    assert _min_timeout > 0 and _min_timeout <= _max_timeout, "config: bad timeout bounds"
    assert _max_timeout <= MAX_TIMEOUT_LIMIT, "config: max timeout too large"
    assert _relay != empty(address), "config: relay account required"
    assert _min_stake * _stake_cap_multiple <= WEIGHT_MASK, "config: stake cap too large"
    min_stake = _min_stake
    stake_cap_multiple = _stake_cap_multiple
    min_timeout = _min_timeout
    max_timeout = _max_timeout
    relay = _relay


# ---------------------------------------------------------------- nodes

@external
@payable
def join(
    gpu: bytes32,
    vram: uint256,
    models: DynArray[bytes32, MAX_MODELS_INPUT],
    public_key: bytes32,
    version: uint256,
):
    """
    @notice Join the network with `msg.value` as stake. A CPU-only node declares
            gpu "cpu" and vram 0 and gets only tasks that need no GPU.
    @param gpu The GPU's name (right-padded ASCII), or "cpu".
    @param vram The GPU's memory in MiB (0 for a CPU node).
    @param models The model IDs the node serves (1 to MAX_NODE_MODELS, distinct).
    @param public_key The node's X25519 key: parameters are encrypted to it.
    @param version The node software's version.
    """
    assert self.node_info[msg.sender] == 0, "nodes: already joined"
    assert msg.value >= min_stake, "nodes: stake below minimum"
    assert vram <= VRAM_MASK, "nodes: vram out of range"
    assert public_key != empty(bytes32), "nodes: public key required"
    self._check_models(models, MAX_NODE_MODELS)
    kept: DynArray[bytes32, MAX_NODE_MODELS] = []
    for m: bytes32 in models:
        kept.append(m)
    self.nodes[msg.sender] = Node(stake=msg.value, gpu=gpu, public_key=public_key, version=version)
    self.node_models[msg.sender] = kept
    self.node_info[msg.sender] = self._pack_node(IDLE, vram, msg.value, gpu, kept)
    self._activate(msg.sender)
    log NodeJoined(
        node=msg.sender, stake=msg.value, gpu=gpu, vram=vram, models=kept,
        public_key=public_key, version=version,
    )
    self._take_queued(msg.sender)


@external
def pause():
    """
    @notice Stop taking new tasks. An idle node pauses at once; a busy node pauses
            when its task ends (whatever the end), instead of taking queued work.
    """
    info: uint256 = self.node_info[msg.sender]
    assert info != 0, "nodes: not a node"
    status: uint256 = info & STATE_MASK
    assert status != PAUSED, "nodes: node is already paused"
    if status == BUSY:
        assert info & PAUSE_REQUESTED == 0, "nodes: pause already requested"
        self.node_info[msg.sender] = info | PAUSE_REQUESTED
        log NodePauseRequested(node=msg.sender)
        return
    self._pause(msg.sender, info)


@external
def resume():
    """
    @notice Take tasks again after `pause`; queued work is taken at once. A busy node
            that asked to pause withdraws the request and stays busy.
    """
    info: uint256 = self.node_info[msg.sender]
    if info & PAUSE_REQUESTED != 0:
        self.node_info[msg.sender] = info & ~PAUSE_REQUESTED
        log NodeResumed(node=msg.sender)
        return
    assert info & STATE_MASK == PAUSED, "nodes: node is not paused"
    self.node_info[msg.sender] = (info & ~STATE_MASK) | IDLE
    self._activate(msg.sender)
    log NodeResumed(node=msg.sender)
    self._take_queued(msg.sender)


@external
def quit():
    """@notice Leave the network when idle or paused; the stake is credited to `balanceOf`."""
    info: uint256 = self.node_info[msg.sender]
    assert info != 0, "nodes: not a node"
    assert info & STATE_MASK != BUSY, "nodes: node is busy"
    if info & STATE_MASK == IDLE:
        self._deactivate(msg.sender)
    stake: uint256 = self.nodes[msg.sender].stake
    self.balanceOf[msg.sender] += stake
    self.nodes[msg.sender] = empty(Node)
    self.node_info[msg.sender] = 0
    self.node_models[msg.sender] = []
    log NodeQuit(node=msg.sender, stake=stake)


@external
def takeQueuedTask() -> bool:
    """
    @notice An idle node takes a queued task it can run, if it finds one (see
            `_take_queued` for which). Selection is a bounded search and can miss
            an idle node; the node's daemon calls this while a task it could run
            is queued, and each call moves the queue's sweep on, so no task stays
            queued next to an idle node that matches it.
    @return True if a task was started for the caller.
    """
    assert self.node_info[msg.sender] & STATE_MASK == IDLE, "nodes: node is not idle"
    return self._take_queued(msg.sender)


# ---------------------------------------------------------------- tasks

@external
@payable
def createTask(
    task_type: uint256,
    commitment: bytes32,
    nonce: bytes32,
    model_ids: DynArray[bytes32, MAX_MODELS_INPUT],
    min_vram: uint256,
    required_gpu: bytes32,
    params_hash: bytes32,
    task_size: uint256,
    timeout: uint256,
):
    """
    @notice Create a task with `msg.value` as its fee, escrowed until it ends. The
            task starts on a matching node at once, or waits in the queue.
    @param task_type What to run (gridtask.types.TaskType).
    @param commitment keccak(task ID ‖ nonce). The task's key on chain, used by every
           other function and event, is keccak(msg.sender ‖ commitment).
    @param nonce Fresh for every task; never accepted twice from the same creator.
    @param model_ids The models the node must serve (1 to MAX_TASK_MODELS, distinct).
    @param min_vram The least VRAM (MiB) the node must have; 0 with no GPU = a CPU task.
    @param required_gpu The GPU the node must have, or empty for any.
    @param params_hash keccak(parameters ‖ nonce), checked by the node.
    @param task_size Units of work (>= 1); the queue ranks tasks by fee per unit.
    @param timeout Seconds allowed for each stage.
    """
    assert msg.value > 0, "tasks: zero fee"
    assert commitment != empty(bytes32), "tasks: empty commitment"
    assert not self.nonce_used[msg.sender][nonce], "tasks: nonce already used"
    key: bytes32 = keccak256(concat(convert(msg.sender, bytes20), commitment))
    assert self.tasks[key].creator == empty(address), "tasks: commitment exists"
    self._check_models(model_ids, MAX_TASK_MODELS)
    assert task_size >= 1, "tasks: task size must be at least 1"
    assert timeout >= min_timeout and timeout <= max_timeout, "tasks: timeout out of bounds"
    models: DynArray[bytes32, MAX_TASK_MODELS] = []
    for m: bytes32 in model_ids:
        models.append(m)

    self.nonce_used[msg.sender][nonce] = True
    seed: bytes32 = keccak256(abi_encode(block.prevrandao, key, nonce, msg.sender))
    log TaskCreated(
        commitment=key, creator=msg.sender, task_type=task_type, nonce=nonce,
        seed=seed, fee=msg.value, task_size=task_size, timeout=timeout, model_ids=models,
        min_vram=min_vram, required_gpu=required_gpu, params_hash=params_hash,
    )

    key_model: bytes32 = self._key_model(models)
    node: address = self._select(seed, key_model, models, min_vram, required_gpu)
    self.tasks[key] = Task(
        creator=msg.sender, node=empty(address), fee=msg.value,
        meta=self._pack_meta(QUEUED, block.timestamp + timeout, timeout),
        score=empty(bytes32), result_hash=empty(bytes32),
    )
    if node != empty(address):
        self._start(key, node)
    else:
        fee_per_unit: uint256 = msg.value // task_size
        self.wanted[key] = Wanted(
            models=models, min_vram=min_vram, gpu=required_gpu, fee_per_unit=fee_per_unit
        )
        task_queue.push(key, key_model, fee_per_unit)
        log TaskQueued(
            commitment=key, creator=msg.sender, key_model=key_model, fee_per_unit=fee_per_unit
        )


@external
def submitScore(key: bytes32, score: bytes32, result_hash: bytes32):
    """
    @notice The selected node commits its score and the keccak of its result,
            encrypted to the creator; the relay checks the upload against it.
    @param key The task's key: keccak(creator ‖ commitment).
    """
    task: Task = self._task_of_node(key)
    assert task.meta & STATE_MASK == STARTED, "tasks: task not started"
    timeout: uint256 = self._timeout(task.meta)
    self.tasks[key].score = score
    self.tasks[key].result_hash = result_hash
    self.tasks[key].meta = self._pack_meta(SCORE_READY, block.timestamp + timeout, timeout)
    log TaskScoreReady(
        commitment=key, node=msg.sender, creator=task.creator, score=score,
        result_hash=result_hash,
    )


@external
def reportTaskError(key: bytes32, error_code: uint256):
    """
    @notice The selected node reports the task's parameters as unrunnable (bad hash,
            unknown model, wrong field). The task's fault: the fee is refunded.
    @param key The task's key.
    """
    task: Task = self._task_of_node(key)
    assert task.meta & STATE_MASK == STARTED, "tasks: task not started"
    self._end(key, task, ERRORED)
    log TaskErrorReported(
        commitment=key, node=msg.sender, creator=task.creator, error_code=error_code
    )
    self._free(task.node)


@external
def validateSingleTask(key: bytes32, sampling_proof: Bytes[256]):
    """
    @notice The creator accepts the score of a task that was not sampled for
            group validation.
    @param key The task's key.
    @param sampling_proof Reserved for the proof that the task was not sampled
           (validation groups); ignored until groups exist.
    """
    task: Task = self.tasks[key]
    assert task.creator != empty(address), "tasks: unknown task"
    assert msg.sender == task.creator, "tasks: only the creator may validate"
    assert task.meta & STATE_MASK == SCORE_READY, "tasks: score not ready"
    timeout: uint256 = self._timeout(task.meta)
    self.tasks[key].meta = self._pack_meta(VALIDATED, block.timestamp + timeout, timeout)
    log TaskValidated(commitment=key, node=task.node, creator=task.creator)


@external
def reportResultUploaded(key: bytes32):
    """
    @notice The relay reports that the node delivered a result matching the hash it
            committed: the task succeeds and the fee is credited to the node.
    @param key The task's key.
    """
    assert msg.sender == relay, "tasks: only the relay may report delivery"
    task: Task = self.tasks[key]
    assert task.creator != empty(address), "tasks: unknown task"
    assert task.meta & STATE_MASK == VALIDATED, "tasks: task not validated"
    self.tasks[key].meta = self._pack_meta(SUCCESS, 0, self._timeout(task.meta))
    self.balanceOf[task.node] += task.fee
    log TaskSuccess(commitment=key, node=task.node, creator=task.creator, fee=task.fee)
    self._free(task.node)


@external
def abortTask(key: bytes32, reason: String[64]):
    """
    @notice End a task without a result and refund its fee. The selected node may
            abort before it scores (a local failure that is not the task's
            fault); the creator or the node may once the stage's deadline passed.
    @param key The task's key.
    @param reason Why, for the creator to read (in the TaskAborted event).
    """
    task: Task = self.tasks[key]
    assert task.creator != empty(address), "tasks: unknown task"
    state: uint256 = task.meta & STATE_MASK
    assert state < SUCCESS, "tasks: task already ended"
    late: bool = block.timestamp > self._deadline(task.meta)
    if msg.sender == task.node:
        assert state == STARTED or late, "tasks: node may abort only before scoring or after the deadline"
    else:
        assert msg.sender == task.creator, "tasks: only the creator or the task's node may abort"
        assert late, "tasks: deadline not passed"
    if state == QUEUED:
        self._unqueue(key)
    self._end(key, task, ABORTED)
    log TaskAborted(commitment=key, by=msg.sender, creator=task.creator, reason=reason)
    if task.node != empty(address):
        self._free(task.node)


@external
def cancelTask(key: bytes32):
    """
    @notice The creator takes back a task that is still queued; the fee is refunded.
    @param key The task's key.
    """
    task: Task = self.tasks[key]
    assert task.creator != empty(address), "tasks: unknown task"
    assert msg.sender == task.creator, "tasks: only the creator may cancel"
    assert task.meta & STATE_MASK == QUEUED, "tasks: task not queued"
    self._unqueue(key)
    self._end(key, task, ABORTED)
    log TaskAborted(commitment=key, by=msg.sender, creator=task.creator, reason="cancelled")


# ---------------------------------------------------------------- money

@external
@nonreentrant
def withdraw():
    """@notice Take out everything the contract owes the caller, paid to the caller."""
    self._withdraw(msg.sender)


@external
@nonreentrant
def withdrawTo(recipient: address):
    """
    @notice Take out everything the contract owes the caller, paid to `recipient`: for
            a creator or node that is a contract which cannot receive ether.
    @param recipient The account the ether is sent to.
    """
    assert recipient != empty(address), "funds: empty recipient"
    self._withdraw(recipient)


# ---------------------------------------------------------------- views

@external
@view
def getTask(key: bytes32) -> (address, address, uint256, uint256, uint256, uint256, bytes32, bytes32):
    """
    @notice creator, node, fee, state, deadline, timeout, score, result hash of a task.
    @param key The task's key: keccak(creator ‖ commitment), the `commitment` of its events.
    """
    t: Task = self.tasks[key]
    return (
        t.creator, t.node, t.fee, t.meta & STATE_MASK, self._deadline(t.meta),
        self._timeout(t.meta), t.score, t.result_hash,
    )


@external
@view
def getNode(node: address) -> (uint256, uint256, bytes32, uint256, bytes32, uint256):
    """@notice status, stake, gpu, vram, public key, version."""
    info: uint256 = self.node_info[node]
    n: Node = self.nodes[node]
    return (
        info & STATE_MASK, n.stake, n.gpu, (info >> VRAM_SHIFT) & VRAM_MASK, n.public_key,
        n.version,
    )


@external
@view
def getNodeModels(node: address) -> DynArray[bytes32, MAX_NODE_MODELS]:
    """@notice The models the node serves."""
    return self.node_models[node]


@external
@view
def pauseRequested(node: address) -> bool:
    """@notice The node is busy and pauses when its task ends."""
    return self.node_info[node] & PAUSE_REQUESTED != 0


@external
@view
def queuedCount() -> uint256:
    """@notice How many tasks wait in the queue."""
    return task_queue.queued_count


# ---------------------------------------------------------------- internals

@internal
@pure
def _check_models(models: DynArray[bytes32, MAX_MODELS_INPUT], limit: uint256):
    """@dev One rule for task and node model lists: 1..limit distinct non-empty IDs."""
    assert len(models) > 0, "models: empty model list"
    assert len(models) <= limit, "models: too many models"
    for i: uint256 in range(MAX_MODELS_INPUT):
        if i >= len(models):
            break
        assert models[i] != empty(bytes32), "models: empty model ID"
        for j: uint256 in range(MAX_MODELS_INPUT):
            if j >= i:
                break
            assert models[i] != models[j], "models: duplicate model"


@internal
@view
def _task_of_node(key: bytes32) -> Task:
    task: Task = self.tasks[key]
    assert task.creator != empty(address), "tasks: unknown task"
    assert msg.sender == task.node, "tasks: only the task's node may do this"
    return task


@internal
def _end(key: bytes32, task: Task, state: uint256):
    """@dev A task that ends without success refunds its creator."""
    self.tasks[key].meta = self._pack_meta(state, 0, self._timeout(task.meta))
    self.balanceOf[task.creator] += task.fee


@internal
def _start(key: bytes32, node: address):
    timeout: uint256 = self._timeout(self.tasks[key].meta)
    self.tasks[key].node = node
    self.tasks[key].meta = self._pack_meta(STARTED, block.timestamp + timeout, timeout)
    self.node_info[node] = (self.node_info[node] & ~STATE_MASK) | BUSY
    log TaskStarted(commitment=key, node=node, creator=self.tasks[key].creator)


@internal
def _free(node: address):
    """@dev A node whose task ended pauses if it asked to, else becomes idle and takes
    queued work at once."""
    info: uint256 = self.node_info[node]
    if info & STATE_MASK != BUSY:
        return
    if info & PAUSE_REQUESTED != 0:
        self._pause(node, info & ~PAUSE_REQUESTED)
        return
    self.node_info[node] = (info & ~STATE_MASK) | IDLE
    self._take_queued(node)


@internal
def _pause(node: address, info: uint256):
    """@dev Out of its models' arrays: selection and the queue no longer see it."""
    self._deactivate(node)
    self.node_info[node] = (info & ~STATE_MASK) | PAUSED
    log NodePaused(node=node)


@internal
def _withdraw(recipient: address):
    """@dev Pay out the caller's balance (zeroed before the call: no re-entry gains)."""
    amount: uint256 = self.balanceOf[msg.sender]
    assert amount > 0, "funds: nothing to withdraw"
    self.balanceOf[msg.sender] = 0
    raw_call(recipient, b"", value=amount)
    log Withdrawal(account=msg.sender, recipient=recipient, amount=amount)


@internal
@view
def _key_model(models: DynArray[bytes32, MAX_TASK_MODELS]) -> bytes32:
    """@dev The task's model served by the fewest nodes: the smallest set that holds
    every node that can run the task."""
    best: bytes32 = models[0]
    fewest: uint256 = self.model_node_count[best]
    for m: bytes32 in models:
        count: uint256 = self.model_node_count[m]
        if count < fewest:
            best = m
            fewest = count
    return best


@internal
@view
def _select(
    seed: bytes32,
    key_model: bytes32,
    models: DynArray[bytes32, MAX_TASK_MODELS],
    min_vram: uint256,
    gpu: bytes32,
) -> address:
    """
    @dev Weighted random choice in flat gas: probe up to MAX_PROBES entries of the
    key model's array (all of them, from a random offset, when there are that few),
    accept a matching node with probability weight / max weight, and fall back to
    the heaviest match seen. Empty when no probe matched: the task is queued.
    """
    n: uint256 = self.model_node_count[key_model]
    if n == 0:
        return empty(address)
    max_weight: uint256 = min_stake * stake_cap_multiple
    offset: uint256 = convert(seed, uint256) % n
    best: address = empty(address)
    best_weight: uint256 = 0
    for i: uint256 in range(MAX_PROBES):
        if n <= MAX_PROBES and i >= n:
            break
        r: uint256 = convert(keccak256(abi_encode(seed, i)), uint256)
        index: uint256 = (offset + i) % n if n <= MAX_PROBES else r % n
        node: address = self.model_nodes[key_model][index + 1]
        info: uint256 = self.node_info[node]
        if not self._matches(node, info, key_model, models, min_vram, gpu):
            continue
        weight: uint256 = (info >> WEIGHT_SHIFT) & WEIGHT_MASK
        if (r >> 128) % max_weight < weight:
            return node
        if weight > best_weight:
            best = node
            best_weight = weight
    return best


@internal
@view
def _matches(
    node: address,
    info: uint256,
    key_model: bytes32,
    models: DynArray[bytes32, MAX_TASK_MODELS],
    min_vram: uint256,
    gpu: bytes32,
) -> bool:
    """@dev Idle, enough VRAM, the right GPU, and every model (`key_model` is known to match).
    The GPU tag and the model filter in `info` settle most refusals without another
    storage read; a pass is confirmed against storage, so the answer is exact."""
    if info & STATE_MASK != IDLE:
        return False
    if (info >> VRAM_SHIFT) & VRAM_MASK < min_vram:
        return False
    if gpu != empty(bytes32):
        if (info >> GPU_TAG_SHIFT) & TAG_MASK != self._tag(gpu):
            return False
        if self.nodes[node].gpu != gpu:
            return False
    for m: bytes32 in models:
        if m != key_model:
            if (info >> BLOOM_SHIFT) & self._bloom_bit(m) == 0:
                return False
            if self.node_model_pos[node][m] == 0:
                return False
    return True


@internal
def _take_queued(node: address) -> bool:
    """
    @dev Start the best-paying task that `_scan` finds for the node among the models
    it serves. Flat gas: at most MAX_NODE_MODELS * (QUEUE_SCAN + SWEEP_SCAN) tasks are
    looked at, however long the queue.
    """
    if task_queue.queued_count == 0:
        return False
    info: uint256 = self.node_info[node]
    best: bytes32 = empty(bytes32)
    best_fee: uint256 = 0
    for m: bytes32 in self.node_models[node]:
        found: bytes32 = self._scan(node, info, m)
        if found != empty(bytes32):
            fee: uint256 = self.wanted[found].fee_per_unit
            if best == empty(bytes32) or fee > best_fee:
                best = found
                best_fee = fee
    if best == empty(bytes32):
        return False
    self._unqueue(best)
    self._start(best, node)
    return True


@internal
def _scan(node: address, info: uint256, model: bytes32) -> bytes32:
    """
    @dev The first task of `model`'s queue the node can run, looking at two windows:
    - the first QUEUE_SCAN tasks in queue order (best bucket first), so that fresh,
      well-paid work is taken first;
    - then SWEEP_SCAN tasks from the model's sweep cursor, which moves past what it
      looked at and starts over at the end of the queue.
    Scan after scan the sweep walks the whole queue, so a task behind any number of
    tasks this node cannot run (a GPU nobody has, in a better-paying bucket) is
    reached within ceil((its position + 1 - QUEUE_SCAN) / SWEEP_SCAN) scans by an idle
    node that can run it: no task hides a runnable one for ever. On the way, a task
    past its deadline is ended (refunded). Empty if none matched.
    """
    cursor: bytes32 = task_queue.cursor[model]
    met: bool = cursor == empty(bytes32)  # the sweep goes on where the first window ends
    candidate: bytes32 = task_queue.first(model)
    for i: uint256 in range(QUEUE_SCAN):
        if candidate == empty(bytes32):
            return empty(bytes32)  # the whole queue was looked at
        if candidate == cursor:
            met = True
        following: bytes32 = task_queue.after(candidate)
        if self._runnable(node, info, model, candidate):
            return candidate
        candidate = following
    if not met:
        candidate = cursor
    for i: uint256 in range(SWEEP_SCAN):
        if candidate == empty(bytes32):
            break
        following: bytes32 = task_queue.after(candidate)
        if self._runnable(node, info, model, candidate):
            task_queue.set_cursor(model, candidate)
            return candidate
        candidate = following
    task_queue.set_cursor(model, candidate)
    return empty(bytes32)


@internal
def _runnable(node: address, info: uint256, model: bytes32, key: bytes32) -> bool:
    """@dev The node can run the queued task; a task past its deadline is ended instead."""
    if block.timestamp > self._deadline(self.tasks[key].meta):
        self._expire(key)
        return False
    want: Wanted = self.wanted[key]
    return self._matches(node, info, model, want.models, want.min_vram, want.gpu)


@internal
def _expire(key: bytes32):
    """@dev A queued task whose deadline passed ends, refunded, when a node comes across it."""
    task: Task = self.tasks[key]
    self._unqueue(key)
    self._end(key, task, ABORTED)
    log TaskAborted(
        commitment=key, by=empty(address), creator=task.creator,
        reason="queue: deadline passed before a node took it",
    )


@internal
def _unqueue(key: bytes32):
    """@dev Out of the queue, and its requirements out of storage (refunded gas)."""
    task_queue.remove(key)
    self.wanted[key] = empty(Wanted)


@internal
def _activate(node: address):
    """@dev Put the node in the array of every model it serves."""
    for m: bytes32 in self.node_models[node]:
        n: uint256 = self.model_node_count[m] + 1
        self.model_nodes[m][n] = node
        self.model_node_count[m] = n
        self.node_model_pos[node][m] = n


@internal
def _deactivate(node: address):
    """@dev Take the node out of its models' arrays (swap with the last, then pop)."""
    for m: bytes32 in self.node_models[node]:
        pos: uint256 = self.node_model_pos[node][m]
        n: uint256 = self.model_node_count[m]
        last: address = self.model_nodes[m][n]
        self.model_nodes[m][pos] = last
        self.node_model_pos[last][m] = pos
        self.model_nodes[m][n] = empty(address)
        self.model_node_count[m] = n - 1
        self.node_model_pos[node][m] = 0


@internal
@pure
def _pack_meta(state: uint256, deadline: uint256, timeout: uint256) -> uint256:
    return state | (deadline << DEADLINE_SHIFT) | (timeout << TIMEOUT_SHIFT)


@internal
@pure
def _deadline(meta: uint256) -> uint256:
    return (meta >> DEADLINE_SHIFT) & TIME_MASK


@internal
@pure
def _timeout(meta: uint256) -> uint256:
    return (meta >> TIMEOUT_SHIFT) & TIME_MASK


@internal
@view
def _pack_node(
    status: uint256, vram: uint256, stake: uint256, gpu: bytes32,
    models: DynArray[bytes32, MAX_NODE_MODELS],
) -> uint256:
    weight: uint256 = min(stake, min_stake * stake_cap_multiple)
    bloom: uint256 = 0
    for m: bytes32 in models:
        bloom |= self._bloom_bit(m)
    return (
        status | (vram << VRAM_SHIFT) | (weight << WEIGHT_SHIFT)
        | (self._tag(gpu) << GPU_TAG_SHIFT) | (bloom << BLOOM_SHIFT)
    )


@internal
@pure
def _tag(name: bytes32) -> uint256:
    return convert(keccak256(name), uint256) & TAG_MASK


@internal
@pure
def _bloom_bit(model: bytes32) -> uint256:
    """@dev One of 64 bits per model: a clear bit proves the node does not serve it."""
    return 1 << (convert(keccak256(model), uint256) % 64)
