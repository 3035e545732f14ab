"""One exception tree for all of gridtask.

    GridtaskError                 anything gridtask raises on purpose
    ├── ConfigError               missing or malformed settings (config file, GRIDTASK_* variables)
    ├── ValidationError           input that cannot become a task (wrong type, unknown model, bad ID)
    │   └── BundleError           a bundle that is too big, malformed, or holds what may not be unpacked
    ├── ChainError                the chain could not be reached or answered strangely
    │   ├── ChainUnreachable      the RPC endpoint did not answer (transport failure): retry later
    │   └── TransactionReverted   a transaction reverted; ``reason`` is the contract's revert string
    ├── RelayError                the relay refused a call (``status``, ``detail``) or is down
    │   ├── NotReady              "task not ready" / "task results not uploaded": retry later
    │   ├── RelayUnavailable      the relay could not be reached at all
    │   └── BundleMismatch        the relay sent bytes that do not hash to the bundle asked for
    ├── CryptoError               a signature or ciphertext that does not check out
    ├── ResultParseError          a result that a Dria singleton cannot read into its output schema
    └── TaskFailed                a task ended without a result
        ├── TaskAborted           the task was aborted on chain (``reason``, ``fee`` refunded)
        ├── TaskErrored           the node reported the parameters as unrunnable (``code``, ``message``)
        ├── TaskTimeout           the task did not end before the caller's timeout
        ├── TaskInvalidated       its result was shown wrong on chain (outvoted, or disputed): refunded
        ├── GroupFailed           a validation group found no two agreeing results: refunded
        └── ResultMismatch        the delivered result does not match the score its node committed
"""

from __future__ import annotations

from gridtask.chain.reasons import expand as expand_reason
from gridtask.types import GroupOutcome


class GridtaskError(Exception):
    """Base class of every error gridtask raises on purpose."""


class ConfigError(GridtaskError):
    """Settings are missing or malformed; the message says which and where they come from."""


class ValidationError(GridtaskError, ValueError):
    """Input that cannot become a task, refused before anything is paid.

    The message starts with what is wrong and names the limit: ``texts: at most 256 per
    task (got 8000)``, ``timeout: must be a positive number of seconds (got 0)``.
    """


class BundleError(ValidationError):
    """A bundle (``gridtask.bundles``) that cannot be packed, trusted or unpacked: a malformed
    name, over a size limit, not a tar.gz, or it holds an absolute path, ``..``, a link out of
    the tree or a device. The message names the bundle or member and the rule. (Bytes that do
    not hash to the name are ``BundleMismatch``: whoever delivered them is at fault.)"""


class ResultParseError(GridtaskError, ValueError):
    """A task's result (which ran and was paid for) that a singleton's parser cannot read into
    its output schema: the message names the singleton, what it looked for, and the text."""


class ChainError(GridtaskError):
    """The chain could not be reached, or answered in a way gridtask cannot use."""


class ChainUnreachable(ChainError):
    """The RPC endpoint did not answer (refused, timed out, dropped): the call may succeed later."""


class TransactionReverted(ChainError):
    """A transaction reverted; ``reason`` is the contract's revert reason, readable
    (``"tasks: zero fee"``): the contract's short code ("E201") is expanded here, the one
    place every path that reports a revert goes through (gridtask.chain.reasons)."""

    def __init__(self, reason: str, *, function: str = "") -> None:
        reason = expand_reason(reason)
        self.reason = reason
        self.function = function
        where = f"{function}: " if function else ""
        super().__init__(f"{where}transaction reverted: {reason}")


class RelayError(GridtaskError):
    """The relay refused a call; ``status`` is the HTTP status and ``detail`` its JSON error."""

    def __init__(self, detail: str, *, status: int = 0) -> None:
        self.detail = detail
        self.status = status
        super().__init__(f"relay {status}: {detail}" if status else f"relay: {detail}")


class NotReady(RelayError):
    """The relay has nothing yet ("task not ready", "task results not uploaded"): retry later."""


class RelayUnavailable(RelayError):
    """The relay could not be reached at all; check that it runs and that the URL is right."""


class BundleMismatch(RelayError):
    """Bytes delivered for a bundle (by the relay) that do not hash to its name: the
    deliverer's fault, not the bundle's author's (a node aborts such a task rather than
    report it as the creator's error). Fetching again, or from another relay, may succeed."""


class CryptoError(GridtaskError):
    """A signature or ciphertext that does not check out."""


class TaskFailed(GridtaskError):
    """A task ended without a result. ``task_id`` names it."""

    def __init__(self, message: str, *, task_id: str = "") -> None:
        self.task_id = task_id
        super().__init__(message)


class TaskAborted(TaskFailed):
    """The task was aborted on chain; ``reason`` is the reason given in ``TaskAborted``.

    An aborted task's fee (``fee`` wei, 0 if unknown) is credited back to its creator's
    balance on chain, which ``gridtask withdraw`` takes out.
    """

    def __init__(self, reason: str, *, task_id: str = "", fee: int = 0) -> None:
        self.reason = reason
        self.fee = fee
        super().__init__(f"task {task_id} aborted: {reason}; {_refunded(fee)}", task_id=task_id)


class TaskErrored(TaskFailed):
    """The node reported the task's parameters as unrunnable.

    ``code`` is the ``TaskErrorCode`` from chain and ``message`` says why in words: the
    limit the inputs break when the SDK can name it, else the code's documented meaning.
    The fee is refunded.
    """

    def __init__(self, code: int, *, task_id: str = "", message: str = "") -> None:
        self.code = code
        self.message = message or f"error code {code}"
        super().__init__(
            f"task {task_id} refused by its node: {self.message} (task error {code}; the fee was refunded)",
            task_id=task_id,
        )


class TaskTimeout(TaskFailed):
    """The task did not end before the caller's timeout; its fee can be recovered by aborting."""


class TaskInvalidated(TaskFailed):
    """The task's result was shown wrong on chain: its validation group outvoted it, or its
    creator won a dispute. Its fee (``fee`` wei) went back to the creator's balance and its
    node (``node``) was slashed; ``reason`` is the one in ``TaskInvalidated``."""

    def __init__(self, reason: str, *, task_id: str = "", node: str = "", fee: int = 0) -> None:
        self.reason = reason
        self.node = node
        self.fee = fee
        super().__init__(
            f"task {task_id} invalidated: {reason}; its node {node or '?'} was slashed and {_refunded(fee)}",
            task_id=task_id,
        )


class GroupFailed(TaskFailed):
    """A validation group of three ended without two agreeing results.

    ``outcome`` is ``GroupOutcome.NO_MAJORITY`` (results came in but no two agree) or
    ``GroupOutcome.TOO_FEW`` (fewer than two members scored before their deadlines);
    ``reason`` is the contract's. Every member was aborted and ``refunded`` wei went back
    to the creator's balance; nobody was slashed (nobody can tell who was wrong). Running
    the task again gives it a new group.
    """

    def __init__(self, outcome: GroupOutcome, reason: str, *, task_id: str = "", refunded: int = 0) -> None:
        self.outcome = outcome
        self.reason = reason
        self.refunded = refunded
        super().__init__(
            f"task {task_id}: its validation group ended {outcome.name} ({reason}); no result is trusted, "
            f"{_refunded(refunded)}; submit it again to run it on a new group",
            task_id=task_id,
        )


class ResultMismatch(TaskFailed):
    """The delivered result does not match the score its node committed on chain.

    ``disputed`` says whether the SDK proved it on chain (``disputeResult``): then the task
    is INVALIDATED, its node (``node``) slashed and the fee refunded. A ciphertext over the
    contract's dispute limit cannot be disputed; the message says so.
    """

    def __init__(self, message: str, *, task_id: str = "", node: str = "", disputed: bool = False) -> None:
        self.node = node
        self.disputed = disputed
        super().__init__(message, task_id=task_id)


def _refunded(fee: int) -> str:
    """The one way a refund is told: how much, where it is, how to take it out."""
    return f"{f'{fee} wei' if fee else 'the fee'} went back to your balance (`gridtask withdraw` takes it out)"
