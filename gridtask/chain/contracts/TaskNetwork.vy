# pragma version 0.4.3
# pragma evm-version cancun
# pragma optimize codesize
"""
@title TaskNetwork
@notice The chain's part of gridtask: the node registry and its stakes, task
        creation and escrow, node selection and the queue, sampling and
        validation groups, disputes, slashing, settlement and the events that
        tell everyone what happened.
        Money is pulled, never pushed: every payment or refund is credited to
        `balanceOf` and taken out with `withdraw`. At every moment the
        contract holds exactly the fees of unfinished tasks, plus the stakes,
        plus what is owed and not yet withdrawn.
@dev    A task is created in one block and started (a node selected) in a later
        one: selection and sampling draw on blockhash(creation block), which did
        not exist while the creator could still change anything (a block
        builder colluding with the creator could grind it; nobody else can).
        Gas stays flat as the network grows: nodes sit in one array per model
        they serve, selection probes a bounded number of random entries of the
        smallest array among the task's models, and the queue is a bucketed
        FIFO with a sweep (see task_queue.vy). A task says whether it needs every
        listed model (all-of, the default) or any one of them (`any_model`, issue
        9): an any-of task is drawn over the union of its models' arrays
        (selection.select_any: exactly stake-proportional, no bias towards nodes
        that serve several of them) and waits in one any-of queue (ANY_QUEUE) that
        every idle node also looks at. What a task requires (models, any_model,
        VRAM, GPU) is kept in the `TaskCreated` event; storage holds only its
        hash (in the score slot, until the node scores), and the requirements
        themselves only while the task waits in the queue.
        A task's key on chain is keccak(creator ‖ commitment), packed: 20
        address bytes then 32 commitment bytes (gridtask.crypto.task_key).
"""

import errors
import node_registry
import packing
import selection
import task_queue

initializes: task_queue
initializes: node_registry
initializes: selection[node_registry := node_registry]

exports: (
    node_registry.min_stake,
    node_registry.stake_cap_multiple,
    node_registry.model_node_count,
    node_registry.release_at,
)


# @notice The stateless checks of scores and delivered results (ScoreVerifier.vy).
interface ScoreVerifier:
    def majority(scores: bytes32[3], voting: uint256, similarity: bool, bits: uint256) -> uint256: pure
    def resultMatches(
        result_key: bytes32, ciphertext: Bytes[MAX_CIPHERTEXT], score: bytes32, similarity: bool
    ) -> bool: pure


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

# @notice A busy node asked to pause: when its task ends it pauses instead of taking work.
event NodePauseRequested:
    node: indexed(address)

# @notice A paused node takes tasks again.
event NodeResumed:
    node: indexed(address)

# @notice A node left selection; its stake stays slashable until `release_at`, then
#         `withdraw` pays it out.
event NodeQuit:
    node: indexed(address)
    stake: uint256
    release_at: uint256

# @notice A joined node now also serves `added` and no longer serves `removed`
#         (getNodeModels has the whole list).
event NodeModelsChanged:
    node: indexed(address)
    added: DynArray[bytes32, MAX_NODE_MODELS]
    removed: DynArray[bytes32, MAX_NODE_MODELS]

# @notice A node added to its stake; `stake` is the new total.
event NodeToppedUp:
    node: indexed(address)
    stake: uint256

# @notice A task was created; its requirements live here. It starts in a later block.
event TaskCreated:
    commitment: indexed(bytes32)
    creator: indexed(address)
    task_type: uint256
    nonce: bytes32
    fee: uint256
    task_size: uint256
    timeout: uint256
    model_ids: DynArray[bytes32, MAX_TASK_MODELS]
    min_vram: uint256
    required_gpu: bytes32
    params_hash: bytes32
    any_model: bool

# @notice No node could take the task now; it waits for one. `key_model` names the queue's
#         model: for an any-of task one such event per listed model, so that every node
#         serving one of them hears of it (the task waits once, in the any-of queue).
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

# @notice The task ended without a result; the fee is refunded to the creator (or, when
#         the creator did not validate in time, paid to the node).
event TaskAborted:
    commitment: indexed(bytes32)
    by: indexed(address)
    creator: indexed(address)
    reason: String[64]

# @notice The task's result was rejected (its score disagreed with its group, or the
#         delivered result does not match its score); the fee is refunded.
event TaskInvalidated:
    commitment: indexed(bytes32)
    node: indexed(address)
    creator: indexed(address)
    reason: String[64]

# @notice A group of three tasks with one task ID was validated (`task_id` is h =
#         keccak(task ID)). outcome: 1 AGREED, 2 NO_MAJORITY, 3 TOO_FEW; bit i of
#         `agreeing` set = keys[i] agreed.
event TaskGroupValidated:
    task_id: indexed(bytes32)
    creator: indexed(address)
    outcome: uint256
    keys: bytes32[3]
    agreeing: uint256
    sampled: bool

# @notice Someone took out what the contract owed them, paid to `recipient`.
event Withdrawal:
    account: indexed(address)
    recipient: indexed(address)
    amount: uint256


# ---------------------------------------------------------------- constants

# @notice At most this many models per task and per node.
MAX_TASK_MODELS: constant(uint256) = selection.MAX_TASK_MODELS
MAX_NODE_MODELS: constant(uint256) = node_registry.MAX_NODE_MODELS
# @dev Inputs are decoded with room to spare, so an over-long list gets a readable revert.
MAX_MODELS_INPUT: constant(uint256) = 16
# @notice How many nodes a start may exclude (the SDK's two most recent tasks' nodes).
MAX_EXCLUDE: constant(uint256) = selection.MAX_EXCLUDE

# @notice Queued tasks a node looks at per model it serves: the first QUEUE_SCAN of
#         the queue (best-paying first), then SWEEP_SCAN from the model's sweep cursor.
QUEUE_SCAN: constant(uint256) = 4
SWEEP_SCAN: constant(uint256) = 4

# @notice The longest `max_timeout` a deployment accepts (seconds, about 136 years):
#         block.timestamp + timeout then fits the 64-bit deadline field for ever.
MAX_TIMEOUT_LIMIT: constant(uint256) = 4294967295  # 2**32 - 1
# @notice blockhash reaches back this many blocks: a task must start within it.
START_WINDOW: constant(uint256) = 256
# @notice Someone other than the creator may start a task only this many blocks after
#         its creation (and with no exclude list), so nobody can start a creator's task
#         before the creator with other exclusions.
START_GRACE: constant(uint256) = 32
# @notice Basis points (validation rate, slash share).
BPS: constant(uint256) = 10000
# @notice The most ciphertext a dispute re-decrypts: 513 words, a result of 16,384 bytes.
MAX_CIPHERTEXT: constant(uint256) = 16416
# @notice Task types with a similarity threshold (the table holds this many).
MAX_TASK_TYPES: constant(uint256) = 16

# Task states (mirrored by gridtask.types.TaskState).
CREATED: constant(uint256) = 1
QUEUED: constant(uint256) = 2
STARTED: constant(uint256) = 3
SCORE_READY: constant(uint256) = 4
VALIDATED: constant(uint256) = 5
SUCCESS: constant(uint256) = 6
ABORTED: constant(uint256) = 7
ERRORED: constant(uint256) = 8
INVALIDATED: constant(uint256) = 9

# Node statuses (mirrored by gridtask.types.NodeStatus).
IDLE: constant(uint256) = node_registry.IDLE
BUSY: constant(uint256) = node_registry.BUSY
PAUSED: constant(uint256) = node_registry.PAUSED
LEAVING: constant(uint256) = node_registry.LEAVING

# Group outcomes (mirrored by gridtask.types.GroupOutcome).
AGREED: constant(uint256) = 1
NO_MAJORITY: constant(uint256) = 2
TOO_FEW: constant(uint256) = 3

RESULT_KEY_TAG: constant(Bytes[20]) = b"gridtask-result-key:"
# @notice The queue of any-of tasks (every idle node looks at it too): a key no model may use.
ANY_QUEUE: constant(bytes32) = task_queue.ANY_QUEUE
# @dev Set in a waiting task's Wanted.fee_per_unit (fees fit 96 bits): an any-of task. A flag
#      in a slot every look reads anyway, not a field of its own (a cold read per look).
ANY_FLAG: constant(uint256) = 2**255


# ---------------------------------------------------------------- storage

struct Task:
    # creator | fee << 160: who pays and how much, in one slot
    cf: uint256
    node: address
    # see the bit layout above: what changes on every step, in one slot
    meta: uint256
    # keccak(abi_encode(models, min_vram, required_gpu)) until the node scores
    score: bytes32
    result_hash: bytes32

# @dev The fields of a task most calls need (three slots of five: reading the whole
#      Task costs two cold reads more).
struct Head:
    cf: uint256
    node: address
    meta: uint256

# @dev What a waiting task requires, kept only while it waits.
struct Wanted:
    models: DynArray[bytes32, MAX_TASK_MODELS]
    min_vram: uint256
    gpu: bytes32
    fee_per_unit: uint256
    exclude: DynArray[address, MAX_EXCLUDE]

# @notice Bounds on a task's timeout (seconds); every stage's deadline derives from it.
min_timeout: public(immutable(uint256))
max_timeout: public(immutable(uint256))
# @notice The relay's account: the only one that may report a result delivered.
relay: public(immutable(address))
# @notice Share of tasks validated by a group of three (basis points).
validation_rate_bps: public(immutable(uint256))
# @notice Seconds the creator has to validate a score before the node may claim its fee.
validation_window: public(immutable(uint256))
# @notice Seconds after delivery during which the creator may dispute the result.
challenge_window: public(immutable(uint256))
# @notice Seconds a node's stake stays slashable after it quits.
unstake_delay: public(immutable(uint256))
# @notice Share of its stake a node loses when slashed (basis points).
slash_bps: public(immutable(uint256))
# @notice The least fee per unit of work (wei): createTask needs fee >= this * task_size.
min_fee_per_unit: public(immutable(uint256))
# @notice The ScoreVerifier contract: group majorities and dispute decryption.
verifier: public(immutable(address))
# @notice Per task type, the Hamming distance (of the high 128 bits of two scores) under
#         which they agree; only similarity types (packing.SIMILARITY_TYPES) use it.
similarity_bits: public(HashMap[uint256, uint256])

# @notice Tasks by key: keccak(creator ‖ commitment), commitment = keccak(task ID ‖ nonce).
tasks: HashMap[bytes32, Task]
# @notice Nonces each creator has used: never accepted twice from the same creator.
nonce_used: public(HashMap[address, HashMap[bytes32, bool]])
# @notice What the contract owes each account (payments, refunds, slashed stakes).
balanceOf: public(HashMap[address, uint256])

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
    _validation_rate_bps: uint256,
    _validation_window: uint256,
    _challenge_window: uint256,
    _unstake_delay: uint256,
    _slash_bps: uint256,
    _min_fee_per_unit: uint256,
    _similarity_bits: DynArray[uint256, MAX_TASK_TYPES],
    _verifier: address,
):
    """
    @param _min_stake The least stake (wei) a node must put up.
    @param _stake_cap_multiple Stakes above this multiple of the minimum add no weight.
    @param _min_timeout Shortest task timeout accepted (seconds).
    @param _max_timeout Longest task timeout accepted (seconds, at most MAX_TIMEOUT_LIMIT).
    @param _relay The relay's account, which reports results delivered.
    @param _validation_rate_bps Share of tasks sampled for a group of three (basis points).
    @param _validation_window Seconds a creator has to validate a score.
    @param _challenge_window Seconds after delivery a creator may dispute the result.
    @param _unstake_delay Seconds a quitting node's stake stays slashable (>= challenge window).
    @param _slash_bps Share of its stake a slashed node loses (basis points).
    @param _min_fee_per_unit Least fee per unit of work (wei).
    @param _similarity_bits Per task type (index), the Hamming threshold of similarity types.
    @param _verifier The ScoreVerifier contract (deployed first).
    """
    assert _min_stake > 0, "config: minimum stake must be positive"
    assert _stake_cap_multiple > 0, "config: stake cap multiple must be positive"
    assert _min_timeout > 0 and _min_timeout <= _max_timeout, "config: bad timeout bounds"
    assert _max_timeout <= MAX_TIMEOUT_LIMIT, "config: max timeout too large"
    assert _relay != empty(address), "config: relay account required"
    assert _min_stake * _stake_cap_multiple <= packing.WEIGHT_MASK, "config: stake cap too large"
    assert _validation_rate_bps <= BPS, "config: validation rate above 10000 bps"
    assert _validation_window > 0, "config: validation window must be positive"
    assert _challenge_window > 0, "config: challenge window must be positive"
    assert _unstake_delay >= _challenge_window, "config: unstake delay shorter than the challenge window"
    assert _unstake_delay <= MAX_TIMEOUT_LIMIT and _validation_window <= MAX_TIMEOUT_LIMIT and _challenge_window <= MAX_TIMEOUT_LIMIT, "config: window too long"
    assert _slash_bps <= BPS, "config: slash share above 10000 bps"
    assert _verifier.is_contract, "config: verifier is not a contract"
    node_registry.__init__(_min_stake, _stake_cap_multiple)
    min_timeout = _min_timeout
    max_timeout = _max_timeout
    relay = _relay
    validation_rate_bps = _validation_rate_bps
    validation_window = _validation_window
    challenge_window = _challenge_window
    unstake_delay = _unstake_delay
    slash_bps = _slash_bps
    min_fee_per_unit = _min_fee_per_unit
    verifier = _verifier
    for i: uint256 in range(MAX_TASK_TYPES):
        if i >= len(_similarity_bits):
            break
        assert _similarity_bits[i] <= 128, "config: similarity bits above 128"
        self.similarity_bits[i] = _similarity_bits[i]


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
    if node_registry.node_info[msg.sender] != 0:
        errors.fail(101)  # nodes: already joined
    if msg.value < node_registry.min_stake:
        errors.fail(102)  # nodes: stake below minimum
    if vram > packing.VRAM_MASK:
        errors.fail(103)  # nodes: vram out of range
    if public_key == empty(bytes32):
        errors.fail(104)  # nodes: public key required
    self._check_models(models, MAX_NODE_MODELS)
    kept: DynArray[bytes32, MAX_NODE_MODELS] = []
    for m: bytes32 in models:
        kept.append(m)
    node_registry.nodes[msg.sender] = node_registry.Node(stake=msg.value, gpu=gpu, public_key=public_key, version=version)
    node_registry.node_models[msg.sender] = kept
    node_registry.node_info[msg.sender] = node_registry.pack(IDLE, vram, msg.value, gpu, kept)
    node_registry.activate(msg.sender)
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
    info: uint256 = node_registry.info_of(msg.sender)
    status: uint256 = info & packing.STATE_MASK
    if status == PAUSED:
        errors.fail(105)  # nodes: node is already paused
    if status == LEAVING:
        errors.fail(106)  # nodes: node is leaving
    if status == BUSY:
        if info & packing.PAUSE_REQUESTED != 0:
            errors.fail(107)  # nodes: pause already requested
        node_registry.node_info[msg.sender] = info | packing.PAUSE_REQUESTED
        log NodePauseRequested(node=msg.sender)
        return
    node_registry.pause(msg.sender, info)


@external
def resume():
    """
    @notice Take tasks again after `pause` (or after a missed deadline paused the
            node); queued work is taken at once. A busy node that asked to pause
            withdraws the request and stays busy. A node whose stake fell below the
            minimum must `topUp` first.
    """
    info: uint256 = node_registry.node_info[msg.sender]
    requested: bool = info & packing.PAUSE_REQUESTED != 0
    if not requested and info & packing.STATE_MASK != PAUSED:
        errors.fail(108)  # nodes: node is not paused
    if node_registry.nodes[msg.sender].stake < node_registry.min_stake:
        errors.fail(109)  # nodes: stake below minimum: top up first
    if requested:
        node_registry.node_info[msg.sender] = info & ~packing.PAUSE_REQUESTED
        log NodeResumed(node=msg.sender)
        return
    node_registry.node_info[msg.sender] = (info & ~packing.STATE_MASK) | IDLE
    node_registry.activate(msg.sender)
    log NodeResumed(node=msg.sender)
    self._take_queued(msg.sender)


@external
@payable
def topUp():
    """
    @notice Add `msg.value` to the caller's stake (after a slash, say); a paused node
            may then `resume`.
    """
    info: uint256 = node_registry.info_of(msg.sender)
    if info & packing.STATE_MASK == LEAVING:
        errors.fail(106)  # nodes: node is leaving
    if msg.value <= 0:
        errors.fail(110)  # nodes: zero top-up
    stake: uint256 = node_registry.nodes[msg.sender].stake + msg.value
    node_registry.set_stake(msg.sender, stake)
    log NodeToppedUp(node=msg.sender, stake=stake)


@external
def addModels(model_ids: DynArray[bytes32, MAX_MODELS_INPUT]):
    """
    @notice The calling node also serves `model_ids` from now on (an OpenGPU provider
            starts serving a source published after it joined). An idle node takes
            queued work it can now run at once. Not while leaving.
    @param model_ids New model IDs (distinct, not served yet; MAX_NODE_MODELS in all).
    """
    info: uint256 = self._changing_models(model_ids)
    models: DynArray[bytes32, MAX_NODE_MODELS] = node_registry.node_models[msg.sender]
    if len(models) + len(model_ids) > MAX_NODE_MODELS:
        errors.fail(114)  # nodes: a node serves at most 8 models
    added: DynArray[bytes32, MAX_NODE_MODELS] = []
    for m: bytes32 in model_ids:
        if m in models:
            errors.fail(115)  # nodes: model already served
        added.append(m)
        models.append(m)
    self._models_changed(info, models, added, [])


@external
def removeModels(model_ids: DynArray[bytes32, MAX_MODELS_INPUT]):
    """
    @notice The calling node no longer serves `model_ids`: selection and the queue stop
            giving it their tasks (a task it runs already goes on to its end). Not while
            leaving; at least one model stays.
    @param model_ids Model IDs the node serves (distinct).
    """
    info: uint256 = self._changing_models(model_ids)
    old: DynArray[bytes32, MAX_NODE_MODELS] = node_registry.node_models[msg.sender]
    kept: DynArray[bytes32, MAX_NODE_MODELS] = []
    for m: bytes32 in old:
        if m not in model_ids:
            kept.append(m)
    if len(kept) + len(model_ids) != len(old):
        errors.fail(116)  # nodes: model not served
    if len(kept) == 0:
        errors.fail(117)  # nodes: a node must keep at least one model
    removed: DynArray[bytes32, MAX_NODE_MODELS] = []
    for m: bytes32 in model_ids:
        removed.append(m)
    self._models_changed(info, kept, [], removed)


@external
def quit():
    """
    @notice Leave selection at once (idle, busy or paused; a task in hand goes on to
            its end). The stake stays slashable for `unstake_delay` seconds, after
            which `withdraw` pays it out with the balance.
    """
    info: uint256 = node_registry.info_of(msg.sender)
    status: uint256 = info & packing.STATE_MASK
    if status == LEAVING:
        errors.fail(111)  # nodes: node is already leaving
    if status == IDLE or status == BUSY:
        node_registry.deactivate(msg.sender)
    release: uint256 = block.timestamp + unstake_delay
    node_registry.node_info[msg.sender] = (info & ~(packing.STATE_MASK | packing.PAUSE_REQUESTED)) | LEAVING
    node_registry.release_at[msg.sender] = release
    log NodeQuit(node=msg.sender, stake=node_registry.nodes[msg.sender].stake, release_at=release)


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
    if node_registry.node_info[msg.sender] & packing.STATE_MASK != IDLE:
        errors.fail(112)  # nodes: node is not idle
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
    any_model: bool,
):
    """
    @notice Create a task with `msg.value` as its fee, escrowed until it ends. Nothing
            is selected here: `startTask`, in a later block, picks the node.
    @param task_type What to run (gridtask.types.TaskType, below 256).
    @param commitment keccak(task ID ‖ nonce). The task's key on chain, used by every
           other function and event, is keccak(msg.sender ‖ commitment).
    @param nonce Fresh for every task; never accepted twice from the same creator.
    @param model_ids The models the node must serve (1 to MAX_TASK_MODELS, distinct): every
           one of them, or with `any_model` any one of them (alternatives).
    @param min_vram The least VRAM (MiB) the node must have; 0 with no GPU = a CPU task.
    @param required_gpu The GPU the node must have, or empty for any.
    @param params_hash keccak(parameters ‖ nonce), checked by the node.
    @param task_size Units of work (>= 1); the queue ranks tasks by fee per unit.
    @param timeout Seconds allowed for each stage.
    @param any_model True: the models are alternatives (see selection.select_any); false:
           the node must serve them all.
    """
    if msg.value <= 0:
        errors.fail(201)  # tasks: zero fee
    if msg.value > packing.FEE_MASK:
        errors.fail(202)  # tasks: fee too large
    if commitment == empty(bytes32):
        errors.fail(203)  # tasks: empty commitment
    if self.nonce_used[msg.sender][nonce]:
        errors.fail(204)  # tasks: nonce already used
    key: bytes32 = keccak256(concat(convert(msg.sender, bytes20), commitment))
    if self.tasks[key].cf != 0:
        errors.fail(205)  # tasks: commitment exists
    self._check_models(model_ids, MAX_TASK_MODELS)
    if task_size < 1:
        errors.fail(206)  # tasks: task size must be at least 1
    if task_size > packing.SIZE_MASK:
        errors.fail(207)  # tasks: task size too large
    if timeout < min_timeout or timeout > max_timeout:
        errors.fail(208)  # tasks: timeout out of bounds
    if task_type > packing.TYPE_MASK:
        errors.fail(209)  # tasks: task type out of range
    if msg.value < min_fee_per_unit * task_size:
        errors.fail(210)  # tasks: fee below the minimum for its size
    models: DynArray[bytes32, MAX_TASK_MODELS] = []
    for m: bytes32 in model_ids:
        models.append(m)

    self.nonce_used[msg.sender][nonce] = True
    # field by field: node and result hash stay empty (writing zeros costs a cold write each)
    self.tasks[key].cf = convert(msg.sender, uint256) | (msg.value << packing.FEE_SHIFT)
    self.tasks[key].meta = (
        CREATED | ((block.timestamp + timeout) << packing.DEADLINE_SHIFT) | (timeout << packing.TIMEOUT_SHIFT)
        | (block.number << packing.RAND_SHIFT) | (task_type << packing.TYPE_SHIFT) | (task_size << packing.SIZE_SHIFT)
    )
    self.tasks[key].score = self._req_hash(models, min_vram, required_gpu, any_model)
    log TaskCreated(
        commitment=key, creator=msg.sender, task_type=task_type, nonce=nonce,
        fee=msg.value, task_size=task_size, timeout=timeout, model_ids=models,
        min_vram=min_vram, required_gpu=required_gpu, params_hash=params_hash, any_model=any_model,
    )


@external
def startTask(
    key: bytes32,
    model_ids: DynArray[bytes32, MAX_TASK_MODELS],
    min_vram: uint256,
    required_gpu: bytes32,
    exclude: DynArray[address, MAX_EXCLUDE],
    any_model: bool,
):
    """
    @notice Select the task's node, from blockhash(creation block) and the key, or
            queue the task. Normally the creator calls it in the block after
            creation; anyone may start a task left waiting START_GRACE blocks.
    @param key The task's key.
    @param model_ids The models given at creation (checked against their hash).
    @param min_vram The VRAM given at creation.
    @param required_gpu The GPU given at creation.
    @param exclude Nodes that must not run the task (the creator's nodes of its two
           most recent tasks, so no node runs two members of a group); creator only.
    @param any_model Whether the models are alternatives, as given at creation.
    """
    cf: uint256 = self._cf(key)
    meta: uint256 = self.tasks[key].meta
    self._require_state(meta, CREATED, 211)  # tasks: task not waiting to start
    created: uint256 = (meta >> packing.RAND_SHIFT) & packing.RAND_MASK
    if block.number <= created:
        errors.fail(212)  # tasks: start in a later block than creation
    if block.number - created > START_WINDOW:
        errors.fail(213)  # tasks: start window passed; cancel the task
    creator: address = packing.creator(cf)
    if msg.sender != creator:
        if len(exclude) != 0:
            errors.fail(214)  # tasks: only the creator may exclude nodes
        if block.number <= created + START_GRACE:
            errors.fail(215)  # tasks: only the creator may start it this early
    if self._req_hash(model_ids, min_vram, required_gpu, any_model) != self.tasks[key].score:
        errors.fail(216)  # tasks: requirements differ from creation

    entropy: bytes32 = blockhash(created)
    meta = (meta & ~(packing.RAND_MASK << packing.RAND_SHIFT)) | (
        (convert(entropy, uint256) & packing.RAND_MASK) << packing.RAND_SHIFT
    ) | packing.STARTED_FLAG
    seed: bytes32 = keccak256(abi_encode(entropy, key))
    deadline: uint256 = block.timestamp + packing.timeout(meta)
    key_model: bytes32 = ANY_QUEUE
    node: address = empty(address)
    if any_model:
        node = selection.select_any(seed, model_ids, min_vram, required_gpu, exclude)
    else:
        key_model = selection.key_model(model_ids)
        node = selection.select(seed, key_model, model_ids, min_vram, required_gpu, exclude)
    if node != empty(address):
        self.tasks[key].node = node
        self.tasks[key].meta = packing.stage(meta, STARTED, deadline)
        node_registry.node_info[node] = (node_registry.node_info[node] & ~packing.STATE_MASK) | BUSY
        log TaskStarted(commitment=key, node=node, creator=creator)
        return
    self.tasks[key].meta = packing.stage(meta, QUEUED, deadline)
    fee_per_unit: uint256 = packing.fee(cf) // ((meta >> packing.SIZE_SHIFT) & packing.SIZE_MASK)
    self.wanted[key] = Wanted(
        models=model_ids, min_vram=min_vram, gpu=required_gpu,
        fee_per_unit=fee_per_unit | convert(any_model, uint256) << 255, exclude=exclude,
    )
    task_queue.push(key, key_model, fee_per_unit)
    heard: DynArray[bytes32, MAX_TASK_MODELS] = [key_model]
    if any_model:
        heard = model_ids  # every node serving one of them hears of it
    for m: bytes32 in heard:
        log TaskQueued(commitment=key, creator=creator, key_model=m, fee_per_unit=fee_per_unit)


@external
def submitScore(key: bytes32, score: bytes32, result_hash: bytes32):
    """
    @notice The selected node commits its score and the keccak of its result,
            encrypted with the task's result key; the relay checks the upload
            against it. The creator then has `validation_window` seconds to validate.
    @param key The task's key: keccak(creator ‖ commitment).
    @param score The result's score (gridtask.scoring.score).
    @param result_hash keccak of the ciphertext the node will deliver.
    """
    task: Head = self._head_of_node(key)
    self._require_state(task.meta, STARTED, 217)  # tasks: task not started
    self.tasks[key].score = score
    self.tasks[key].result_hash = result_hash
    self.tasks[key].meta = packing.stage(
        task.meta | packing.SCORED_FLAG, SCORE_READY, block.timestamp + validation_window
    )
    log TaskScoreReady(
        commitment=key, node=msg.sender, creator=packing.creator(task.cf), score=score,
        result_hash=result_hash,
    )
    # a node is busy only while it computes: scored, it takes the next task (a group's
    # extras run while the original waits for the vote); the task's later ends leave it be
    self._free(msg.sender, False)


@external
def reportTaskError(key: bytes32, error_code: uint256):
    """
    @notice The selected node reports the task's parameters as unrunnable (bad hash,
            unknown model, wrong field). The task's fault: the fee is refunded.
    @param key The task's key.
    @param error_code Why (gridtask.types.TaskErrorCode).
    """
    task: Head = self._head_of_node(key)
    self._require_state(task.meta, STARTED, 217)  # tasks: task not started
    self._end(key, task, ERRORED)
    log TaskErrorReported(
        commitment=key, node=msg.sender, creator=packing.creator(task.cf), error_code=error_code
    )
    self._free(task.node, False)


@external
@view
def isSampled(key: bytes32, task_id_hash: bytes32, nonce: bytes32) -> bool:
    """
    @notice Whether the started task was sampled for validation by a group of three:
            keccak(h ‖ rand) % 10000 < validation_rate_bps, h = keccak(task ID), rand
            drawn from blockhash(creation block) at start.
    @param key The task's key.
    @param task_id_hash h = keccak(task ID): with the nonce it opens the commitment.
    @param nonce The task's nonce.
    @return True if the task must be validated as a group.
    """
    task: Head = self._head(key)
    self._check_opening(key, packing.creator(task.cf), task_id_hash, nonce)
    if task.meta & packing.STARTED_FLAG == 0:
        errors.fail(217)  # tasks: task not started
    return self._sampled(task_id_hash, task.meta)


@external
def validateSingleTask(key: bytes32, task_id_hash: bytes32, nonce: bytes32):
    """
    @notice The creator accepts the score of a task that was not sampled, opening its
            commitment, which proves it was not.
    @param key The task's key.
    @param task_id_hash h = keccak(task ID), never the task ID itself (the result key
           derives from it, and calldata is public).
    @param nonce The task's nonce.
    """
    task: Head = self._head_of_creator(key, 218)  # tasks: only the creator may validate
    self._require_state(task.meta, SCORE_READY, 219)  # tasks: score not ready
    self._check_opening(key, msg.sender, task_id_hash, nonce)
    if self._sampled(task_id_hash, task.meta):
        errors.fail(220)  # tasks: task was sampled: validate it as a group of three
    self.tasks[key].meta = packing.stage(
        task.meta, VALIDATED, block.timestamp + packing.timeout(task.meta)
    )
    log TaskValidated(commitment=key, node=task.node, creator=msg.sender)


@external
def validateTaskGroup(task_id_hash: bytes32, nonces: bytes32[3]):
    """
    @notice The creator validates three tasks with one task ID run by three nodes.
            Two or more agreeing scores are accepted and their nodes paid; a
            disagreeing score, or an error while two agree, is slashed and the
            slashed stake goes to the agreeing nodes. With no two agreeing, or fewer
            than two scores, the group is aborted and refunded. Sampled (and the
            original's fee still held): the agreeing share the original's fee and
            the other fees go back; otherwise each agreeing member keeps its own.
    @param task_id_hash h = keccak(task ID), of the task ID the three share.
    @param nonces The members' nonces; nonces[0] is the original (sampled) task.
    """
    keys: bytes32[3] = empty(bytes32[3])
    metas: uint256[3] = empty(uint256[3])
    nodes: address[3] = empty(address[3])
    scores: bytes32[3] = empty(bytes32[3])
    for i: uint256 in range(3):
        keys[i] = self._key_of(msg.sender, task_id_hash, nonces[i])
        task: Task = self._task(keys[i])
        metas[i] = task.meta
        nodes[i] = task.node
        scores[i] = task.score
        if task.meta & packing.GROUPED_FLAG != 0:
            errors.fail(301)  # group: a member was already validated in a group
        state: uint256 = task.meta & packing.STATE_MASK
        if state != SCORE_READY and state != ERRORED and state != ABORTED:
            errors.fail(302)  # group: a member is still running; abort it after its deadline
        if packing.task_type(task.meta) != packing.task_type(metas[0]):
            errors.fail(303)  # group: members differ in task type
        for j: uint256 in range(3):
            if j >= i:
                break
            if keys[i] == keys[j]:
                errors.fail(304)  # group: nonces must differ
            if task.node != empty(address) and task.node == nodes[j]:
                errors.fail(305)  # group: two tasks ran on the same node

    task_type: uint256 = packing.task_type(metas[0])
    sampled: bool = metas[0] & packing.STARTED_FLAG != 0 and self._sampled(task_id_hash, metas[0])
    scored: uint256 = 0
    voting: uint256 = 0
    for i: uint256 in range(3):
        if metas[i] & packing.STATE_MASK == SCORE_READY:
            voting |= 1 << i
            scored += 1
    agreeing: uint256 = staticcall ScoreVerifier(verifier).majority(
        scores, voting, packing.similar(task_type), self.similarity_bits[task_type]
    )
    count: uint256 = (agreeing & 1) + ((agreeing >> 1) & 1) + ((agreeing >> 2) & 1)
    outcome: uint256 = AGREED
    if count < 2:
        outcome = NO_MAJORITY if scored >= 2 else TOO_FEW
        agreeing = 0
        count = 0

    pot: uint256 = 0
    if sampled and count > 0 and metas[0] & packing.STATE_MASK == SCORE_READY:
        pot = packing.fee(self.tasks[keys[0]].cf)
    held: uint256 = 0
    paid: uint256 = 0
    slashed: uint256 = 0
    for i: uint256 in range(3):
        key: bytes32 = keys[i]
        meta: uint256 = metas[i] | packing.GROUPED_FLAG
        state: uint256 = meta & packing.STATE_MASK
        self.tasks[key].meta = meta
        if state == ERRORED and count > 0:
            slashed += node_registry.slash(nodes[i], key, "group: reported an error while two agreed", slash_bps)
        if state != SCORE_READY:
            continue
        cf: uint256 = self.tasks[key].cf
        fee: uint256 = packing.fee(cf)
        held += fee
        if agreeing & (1 << i) != 0:
            pay: uint256 = fee
            if pot != 0:
                pay = pot // count
                if paid == 0:
                    pay += pot % count
                self.tasks[key].cf = (cf & packing.ADDRESS_MASK) | (pay << packing.FEE_SHIFT)
            paid += pay
            self.tasks[key].meta = packing.stage(meta, VALIDATED, block.timestamp + packing.timeout(meta))
            log TaskValidated(commitment=key, node=nodes[i], creator=msg.sender)
            continue
        if count > 0:
            self.tasks[key].meta = packing.stage(meta, INVALIDATED, 0)
            reason: String[64] = "group: score disagrees with the majority"
            slashed += node_registry.slash(nodes[i], key, reason, slash_bps)
            log TaskInvalidated(commitment=key, node=nodes[i], creator=msg.sender, reason=reason)
        else:
            self.tasks[key].meta = packing.stage(meta, ABORTED, 0)
            why: String[64] = "group: no two results agree"
            if outcome == TOO_FEW:
                why = "group: fewer than two results"
            log TaskAborted(commitment=key, by=msg.sender, creator=msg.sender, reason=why)
    self.balanceOf[msg.sender] += held - paid

    # slashed stakes go to the agreeing nodes (equal split, remainder to the first)
    credited: uint256 = 0
    for i: uint256 in range(3):
        if agreeing & (1 << i) != 0:
            amount: uint256 = slashed // count
            if credited == 0:
                amount += slashed % count
            credited += amount
            self.balanceOf[nodes[i]] += amount
    log TaskGroupValidated(
        task_id=task_id_hash, creator=msg.sender, outcome=outcome, keys=keys, agreeing=agreeing,
        sampled=sampled,
    )


@external
def reportResultUploaded(key: bytes32):
    """
    @notice The relay reports that the node delivered a result matching the hash it
            committed: the task succeeds and the fee is credited to the node. The
            creator may dispute the result for `challenge_window` seconds.
    @param key The task's key.
    """
    if msg.sender != relay:
        errors.fail(221)  # tasks: only the relay may report delivery
    task: Head = self._head(key)
    self._require_state(task.meta, VALIDATED, 222)  # tasks: task not validated
    self.tasks[key].meta = packing.stage(task.meta, SUCCESS, block.timestamp + challenge_window)
    fee: uint256 = packing.fee(task.cf)
    self.balanceOf[task.node] += fee
    log TaskSuccess(commitment=key, node=task.node, creator=packing.creator(task.cf), fee=fee)


@external
def claimUnvalidated(key: bytes32):
    """
    @notice The node of a scored task whose creator did not validate within
            `validation_window` takes its fee; the task ends ABORTED.
    @param key The task's key.
    """
    task: Head = self._head_of_node(key)
    self._require_state(task.meta, SCORE_READY, 219)  # tasks: score not ready
    if block.timestamp <= packing.deadline(task.meta):
        errors.fail(223)  # tasks: validation window not passed
    self.tasks[key].meta = packing.stage(task.meta, ABORTED, 0)
    self.balanceOf[msg.sender] += packing.fee(task.cf)
    log TaskAborted(
        commitment=key, by=msg.sender, creator=packing.creator(task.cf),
        reason="creator did not validate in time: node paid",
    )


@external
def disputeResult(key: bytes32, task_id: bytes32, nonce: bytes32, ciphertext: Bytes[MAX_CIPHERTEXT]):
    """
    @notice The creator proves that the delivered result does not match the node's
            score: the contract decrypts the delivered ciphertext with the task's
            result key (keccak-CTR, gridtask.crypto) and recomputes the result's
            digest. A mismatch takes the fee back from the node, refunds it and
            slashes the node; a match reverts, so an honest node cannot be framed.
            Results over 16,384 bytes cannot be disputed on chain.
    @param key The task's key.
    @param task_id The task ID itself: keccak(task ID) opens the commitment and the
           result key derives from it (a dispute is the one call that reveals it).
    @param nonce The task's nonce.
    @param ciphertext The ciphertext the node delivered (its keccak is on chain).
    """
    task: Task = self._task(key)
    if msg.sender != packing.creator(task.cf):
        errors.fail(224)  # tasks: only the creator may dispute
    self._check_opening(key, msg.sender, keccak256(task_id), nonce)
    self._require_state(task.meta, SUCCESS, 401)  # dispute: task not delivered
    if block.timestamp > packing.deadline(task.meta):
        errors.fail(402)  # dispute: challenge window passed
    if keccak256(ciphertext) != task.result_hash:
        errors.fail(403)  # dispute: not the delivered ciphertext
    result_key: bytes32 = keccak256(concat(RESULT_KEY_TAG, task_id, nonce))
    if staticcall ScoreVerifier(verifier).resultMatches(
        result_key, ciphertext, task.score, packing.similar(packing.task_type(task.meta))
    ):
        errors.fail(404)  # dispute: the result matches the score

    node: address = task.node
    fee: uint256 = packing.fee(task.cf)
    from_balance: uint256 = min(self.balanceOf[node], fee)
    self.balanceOf[node] -= from_balance
    stake: uint256 = node_registry.nodes[node].stake
    from_stake: uint256 = min(fee - from_balance, stake)
    if from_stake > 0:
        node_registry.set_stake(node, stake - from_stake)
    self.tasks[key].meta = packing.stage(task.meta, INVALIDATED, 0)
    reason: String[64] = "dispute: the delivered result does not match its score"
    slashed: uint256 = node_registry.slash(node, key, reason, slash_bps)
    self.balanceOf[msg.sender] += from_balance + from_stake + slashed
    log TaskInvalidated(commitment=key, node=node, creator=msg.sender, reason=reason)


@external
def abortTask(key: bytes32, reason: String[64]):
    """
    @notice End a task without a result and refund its fee. The selected node may
            abort before it scores (a local failure that is not the task's fault);
            the creator or the node may once the stage's deadline passed. A task
            aborted past its deadline in the node's own stage (started or
            validated) pauses that node. A scored task is not aborted: it is
            validated, or its node claims it after the validation window.
    @param key The task's key.
    @param reason Why, for the creator to read (in the TaskAborted event).
    """
    task: Head = self._head(key)
    state: uint256 = task.meta & packing.STATE_MASK
    if state >= SUCCESS:
        errors.fail(225)  # tasks: task already ended
    if state == SCORE_READY:
        errors.fail(226)  # tasks: scored: validate it, or its node claims it later
    late: bool = block.timestamp > packing.deadline(task.meta)
    if msg.sender == task.node:
        if state != STARTED and not late:
            errors.fail(227)  # tasks: scored: wait for deadline
    else:
        if msg.sender != packing.creator(task.cf):
            errors.fail(228)  # tasks: only the creator or the task's node may abort
        if not late:
            errors.fail(229)  # tasks: deadline not passed
    if state == QUEUED:
        self._unqueue(key)
    self._end(key, task, ABORTED)
    log TaskAborted(commitment=key, by=msg.sender, creator=packing.creator(task.cf), reason=reason)
    if state == STARTED:
        self._free(task.node, late)
    elif state == VALIDATED:  # always late here: the node let its delivery deadline pass
        self._pause_late(task.node)


@external
def cancelTask(key: bytes32):
    """
    @notice The creator takes back a task that has no node yet (created or queued);
            the fee is refunded.
    @param key The task's key.
    """
    task: Head = self._head_of_creator(key, 230)  # tasks: only the creator may cancel
    state: uint256 = task.meta & packing.STATE_MASK
    if state != QUEUED and state != CREATED:
        errors.fail(231)  # tasks: task not queued
    if state == QUEUED:
        self._unqueue(key)
    self._end(key, task, ABORTED)
    log TaskAborted(commitment=key, by=msg.sender, creator=msg.sender, reason="cancelled")


# ---------------------------------------------------------------- money

@external
@nonreentrant
def withdraw():
    """
    @notice Take out everything the contract owes the caller, paid to the caller: the
            balance, and the stake of a node that quit once it is released.
    """
    self._withdraw(msg.sender)


@external
@nonreentrant
def withdrawTo(recipient: address):
    """
    @notice Take out everything the contract owes the caller, paid to `recipient`: for
            a creator or node that is a contract which cannot receive ether.
    @param recipient The account the ether is sent to.
    """
    if recipient == empty(address):
        errors.fail(501)  # funds: empty recipient
    self._withdraw(recipient)


# ---------------------------------------------------------------- views

@external
@view
def getTask(key: bytes32) -> (address, address, uint256, uint256, uint256, uint256, bytes32, bytes32):
    """
    @notice creator, node, fee, state, deadline, timeout, score, result hash of a task.
            The deadline of a SUCCESS task is the end of its challenge window; the
            score is empty until the node scores.
    @param key The task's key: keccak(creator ‖ commitment), the `commitment` of its events.
    @return creator, node, fee, state, deadline, timeout, score, result hash.
    """
    t: Task = self.tasks[key]
    score: bytes32 = empty(bytes32)
    if t.meta & packing.SCORED_FLAG != 0:
        score = t.score
    return (
        packing.creator(t.cf), t.node, packing.fee(t.cf), t.meta & packing.STATE_MASK,
        packing.deadline(t.meta), packing.timeout(t.meta), score, t.result_hash,
    )


@external
@view
def getTaskInfo(key: bytes32) -> (uint256, uint256, uint256, bool):
    """
    @notice What getTask leaves out.
    @param key The task's key.
    @return task type, task size, creation block (0 once started: it must start within
            256 blocks of it), whether it was a member of a validated group.
    """
    meta: uint256 = self.tasks[key].meta
    created: uint256 = 0
    if meta & packing.STARTED_FLAG == 0:
        created = (meta >> packing.RAND_SHIFT) & packing.RAND_MASK
    return (
        packing.task_type(meta), (meta >> packing.SIZE_SHIFT) & packing.SIZE_MASK, created,
        meta & packing.GROUPED_FLAG != 0,
    )


@external
@view
def getNode(node: address) -> (uint256, uint256, bytes32, uint256, bytes32, uint256):
    """
    @notice A node's record.
    @param node The node's account.
    @return status, stake, gpu, vram, public key, version.
    """
    info: uint256 = node_registry.node_info[node]
    n: node_registry.Node = node_registry.nodes[node]
    return (
        info & packing.STATE_MASK, n.stake, n.gpu, (info >> packing.VRAM_SHIFT) & packing.VRAM_MASK, n.public_key,
        n.version,
    )


@external
@view
def getNodeModels(node: address) -> DynArray[bytes32, MAX_NODE_MODELS]:
    """
    @notice The models the node serves.
    @param node The node's account.
    @return The model IDs.
    """
    return node_registry.node_models[node]


@external
@view
def pauseRequested(node: address) -> bool:
    """
    @notice The node is busy and pauses when its task ends.
    @param node The node's account.
    @return True if a pause is pending.
    """
    return node_registry.node_info[node] & packing.PAUSE_REQUESTED != 0


@external
@view
def queuedCount() -> uint256:
    """
    @notice How many tasks wait in the queue.
    @return The number of queued tasks.
    """
    return task_queue.queued_count & (task_queue.ANY_ONE - 1)


# ---------------------------------------------------------------- internals: checks

@internal
@pure
def _check_models(models: DynArray[bytes32, MAX_MODELS_INPUT], limit: uint256):
    """@dev One rule for task and node model lists: 1..limit distinct non-empty IDs."""
    if len(models) <= 0:
        errors.fail(601)  # models: empty model list
    if len(models) > limit:
        errors.fail(602)  # models: too many models
    for i: uint256 in range(MAX_MODELS_INPUT):
        if i >= len(models):
            break
        if models[i] == empty(bytes32):
            errors.fail(603)  # models: empty model ID
        if models[i] == ANY_QUEUE:
            errors.fail(605)  # models: reserved model ID
        for j: uint256 in range(MAX_MODELS_INPUT):
            if j >= i:
                break
            if models[i] == models[j]:
                errors.fail(604)  # models: duplicate model


@internal
def _models_changed(
    info: uint256,
    models: DynArray[bytes32, MAX_NODE_MODELS],
    added: DynArray[bytes32, MAX_NODE_MODELS],
    removed: DynArray[bytes32, MAX_NODE_MODELS],
):
    """@dev The caller now serves `models`: the arrays follow, the event says what changed,
    and an idle node looks at the queues of what it now serves at once (after an add it may
    start a task; either way the look moves the sweep cursors and ends expired tasks)."""
    node_registry.set_models(msg.sender, info, models)
    log NodeModelsChanged(node=msg.sender, added=added, removed=removed)
    if info & packing.STATE_MASK == IDLE:
        self._take_queued(msg.sender)


@internal
@view
def _changing_models(models: DynArray[bytes32, MAX_MODELS_INPUT]) -> uint256:
    """@dev The caller's node_info: a node, not leaving, naming a sound list of models."""
    info: uint256 = node_registry.info_of(msg.sender)
    if info & packing.STATE_MASK == LEAVING:
        errors.fail(106)  # nodes: node is leaving
    self._check_models(models, MAX_NODE_MODELS)
    return info


@internal
@view
def _task(key: bytes32) -> Task:
    """@dev The task, which must exist."""
    self._cf(key)
    return self.tasks[key]


@internal
@pure
def _require_state(meta: uint256, state: uint256, reason: uint256):
    """@dev The task is in `state`, else revert with `reason` (an errors.fail code)."""
    if meta & packing.STATE_MASK != state:
        errors.fail(reason)


@internal
@view
def _cf(key: bytes32) -> uint256:
    """@dev The task's creator and fee; the task must exist."""
    cf: uint256 = self.tasks[key].cf
    if cf == 0:
        errors.fail(232)  # tasks: unknown task
    return cf


@internal
@view
def _head(key: bytes32) -> Head:
    """@dev The task's creator and fee, node and meta; the task must exist."""
    return Head(cf=self._cf(key), node=self.tasks[key].node, meta=self.tasks[key].meta)


@internal
@view
def _head_of_node(key: bytes32) -> Head:
    """@dev The task's head, whose node must be the caller."""
    task: Head = self._head(key)
    if msg.sender != task.node:
        errors.fail(233)  # tasks: only the task's node may do this
    return task


@internal
@view
def _head_of_creator(key: bytes32, reason: uint256) -> Head:
    """@dev The task's head, whose creator must be the caller (else errors.fail(reason))."""
    task: Head = self._head(key)
    if msg.sender != packing.creator(task.cf):
        errors.fail(reason)
    return task


@internal
@pure
def _key_of(creator: address, id_hash: bytes32, nonce: bytes32) -> bytes32:
    """@dev keccak(creator ‖ keccak(h ‖ nonce)), h = keccak(task ID): the key h and a nonce open."""
    return keccak256(concat(convert(creator, bytes20), keccak256(concat(id_hash, nonce))))


@internal
@pure
def _check_opening(key: bytes32, creator: address, id_hash: bytes32, nonce: bytes32):
    """@dev h = keccak(task ID) and the nonce open the task's commitment."""
    if self._key_of(creator, id_hash, nonce) != key:
        errors.fail(234)  # tasks: task ID does not open the commitment


@internal
@view
def _sampled(id_hash: bytes32, meta: uint256) -> bool:
    """@dev The sampling rule: keccak(h ‖ rand) % 10000 < validation_rate_bps."""
    rand: uint256 = (meta >> packing.RAND_SHIFT) & packing.RAND_MASK
    return convert(keccak256(abi_encode(id_hash, rand)), uint256) % BPS < validation_rate_bps


@internal
@pure
def _req_hash(
    models: DynArray[bytes32, MAX_TASK_MODELS], min_vram: uint256, gpu: bytes32, any_model: bool
) -> bytes32:
    """@dev What startTask checks its requirements against."""
    return keccak256(abi_encode(models, min_vram, gpu, any_model))


# ---------------------------------------------------------------- internals: groups and stakes

# ---------------------------------------------------------------- internals: lifecycle

@internal
def _end(key: bytes32, task: Head, state: uint256):
    """@dev A task that ends without success refunds its creator."""
    self.tasks[key].meta = packing.stage(task.meta, state, 0)
    self.balanceOf[packing.creator(task.cf)] += packing.fee(task.cf)


@internal
def _start(key: bytes32, node: address):
    """@dev A queued task starts on `node`."""
    meta: uint256 = self.tasks[key].meta
    self.tasks[key].node = node
    self.tasks[key].meta = packing.stage(meta, STARTED, block.timestamp + packing.timeout(meta))
    node_registry.node_info[node] = (node_registry.node_info[node] & ~packing.STATE_MASK) | BUSY
    log TaskStarted(commitment=key, node=node, creator=packing.creator(self.tasks[key].cf))


@internal
def _pause_late(node: address):
    """@dev The penalty of a node that let a validated task's deadline pass, when it may
    be busy with another task by then: it pauses now if idle, else when that task ends."""
    info: uint256 = node_registry.node_info[node]
    status: uint256 = info & packing.STATE_MASK
    if status == IDLE:
        node_registry.pause(node, info)
    elif status == BUSY and info & packing.PAUSE_REQUESTED == 0:
        node_registry.node_info[node] = info | packing.PAUSE_REQUESTED
        log NodePauseRequested(node=node)


@internal
def _free(node: address, pause: bool):
    """@dev A node whose task ended pauses if it asked to (or must: it let the task's
    deadline pass, or its stake is below the minimum), else becomes idle and takes
    queued work at once. A leaving node stays out."""
    info: uint256 = node_registry.node_info[node]
    if info & packing.STATE_MASK != BUSY:
        return
    if pause or info & packing.PAUSE_REQUESTED != 0:
        node_registry.pause(node, info & ~packing.PAUSE_REQUESTED)
        return
    node_registry.node_info[node] = (info & ~packing.STATE_MASK) | IDLE
    self._take_queued(node)


@internal
def _withdraw(recipient: address):
    """@dev Pay out the caller's balance, and its stake if it quit and the unstake delay
    passed (the node's record goes too). Zeroed before the call: no re-entry gains."""
    amount: uint256 = self.balanceOf[msg.sender]
    released: bool = False
    if node_registry.node_info[msg.sender] & packing.STATE_MASK == LEAVING and block.timestamp >= node_registry.release_at[msg.sender]:
        released = True
        amount += node_registry.nodes[msg.sender].stake
        node_registry.nodes[msg.sender] = empty(node_registry.Node)
        node_registry.node_info[msg.sender] = 0
        node_registry.node_models[msg.sender] = []
        node_registry.release_at[msg.sender] = 0
    if amount == 0 and not released:
        errors.fail(502)  # funds: nothing to withdraw
    self.balanceOf[msg.sender] = 0
    if amount > 0:
        raw_call(recipient, b"", value=amount)
    log Withdrawal(account=msg.sender, recipient=recipient, amount=amount)


# ---------------------------------------------------------------- internals: selection and queue

@internal
def _take_queued(node: address) -> bool:
    """
    @dev Start the best-paying task that `_scan` finds for the node among the models
    it serves, and in the any-of queue when it holds something. Flat gas: at most
    (MAX_NODE_MODELS + 1) * (QUEUE_SCAN + SWEEP_SCAN) tasks are looked at, however long
    the queue.
    """
    count: uint256 = task_queue.queued_count
    if count == 0:
        return False
    info: uint256 = node_registry.node_info[node]
    best: bytes32 = empty(bytes32)
    best_fee: uint256 = 0
    queues: DynArray[bytes32, MAX_NODE_MODELS + 1] = []
    for m: bytes32 in node_registry.node_models[node]:
        queues.append(m)
    if count >= task_queue.ANY_ONE:
        queues.append(ANY_QUEUE)
    for m: bytes32 in queues:
        found: bytes32 = self._scan(node, info, m)
        if found != empty(bytes32):
            fee: uint256 = self.wanted[found].fee_per_unit & (ANY_FLAG - 1)
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
    if block.timestamp > packing.deadline(self.tasks[key].meta):
        self._expire(key)
        return False
    want: Wanted = self.wanted[key]
    if want.fee_per_unit & ANY_FLAG != 0:
        return selection.matches_any(node, info, want.models, want.min_vram, want.gpu, want.exclude)
    return selection.matches(node, info, model, want.models, want.min_vram, want.gpu, want.exclude)


@internal
def _expire(key: bytes32):
    """@dev A queued task whose deadline passed ends, refunded, when a node comes across it."""
    task: Head = self._head(key)
    self._unqueue(key)
    self._end(key, task, ABORTED)
    log TaskAborted(
        commitment=key, by=empty(address), creator=packing.creator(task.cf),
        reason="queue: deadline passed before a node took it",
    )


@internal
def _unqueue(key: bytes32):
    """@dev Out of the queue, and its requirements out of storage (refunded gas)."""
    task_queue.remove(key)
    self.wanted[key] = empty(Wanted)
