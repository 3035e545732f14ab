"""The errors an OpenGPU user meets, with ogpu's names, each also a gridtask error.

Why both: code written for ogpu catches ``TaskExpiredError`` or ``InsufficientBalanceError``;
gridtask code catches ``ValidationError`` (refused before anything was paid) or ``ChainError``.
Every message says what went wrong and what to do.
"""

from __future__ import annotations

from gridtask.exceptions import ChainError, GridtaskError, TaskFailed, ValidationError


class OGPUError(GridtaskError):
    """Any error of ``gridtask.sdk.opengpu``."""


class TaskExpiredError(OGPUError, ValidationError):
    """The task's ``expiryTime`` has passed (before publishing: nothing was sent), or the task
    expired before a response came (its payment was refunded to the creator's balance)."""

    def __init__(self, task: str, expiry: int, *, refunded: int = 0) -> None:
        self.task, self.expiry, self.refunded = task, expiry, refunded
        what = (f"{refunded} wei were refunded to your balance on chain (`gridtask withdraw`)" if refunded
                else "nothing was paid")
        super().__init__(f"task {task} expired at {expiry} with no response: {what}; publish it again "
                         f"with a later expiryTime")


class ExpiryTooLongError(OGPUError, ValidationError):
    """``expiryTime`` is further away than the source's ``maxExpiryDuration``."""


class InsufficientBalanceError(OGPUError, ValidationError):
    """The account cannot pay the task (payment per response, plus gas)."""

    def __init__(self, account: str, required: int, available: int) -> None:
        self.account, self.required, self.available = account, required, available
        super().__init__(f"{account} holds {available} wei but the task needs {required} wei (payment for "
                         f"each response, plus gas): fund the account or lower the payment; nothing was sent")


class PaymentBelowMinimumError(OGPUError, ValidationError):
    """The payment is under the source's ``minPayment``."""

    def __init__(self, source: str, payment: int, minimum: int) -> None:
        self.source, self.payment, self.minimum = source, payment, minimum
        super().__init__(f"payment {payment} wei is below source {source}'s minimum of {minimum} wei: pay at "
                         f"least that; nothing was sent")


class UnknownFunctionError(OGPUError, ValidationError):
    """The source exposes no function of that name (refused before paying)."""


class InvalidTaskDataError(OGPUError, ValidationError):
    """The data does not fit the function's input model (refused before paying)."""


class SourceNotFoundError(OGPUError, ValidationError):
    """No source is registered at that address."""


class SourceInactiveError(OGPUError, ValidationError):
    """The source was inactivated by its owner: it takes no new tasks."""


class NotSourceOwnerError(OGPUError, ValidationError):
    """Only a source's owner may update or inactivate it."""


class TaskNotFoundError(OGPUError, ValidationError):
    """This process published no task of that address (a gridtask task's ID is private to its
    creator: another process cannot follow it)."""


class ResponseAlreadyConfirmedError(OGPUError, ValidationError):
    """The task already has a confirmed response (the first confirmation stands)."""


class TaskAlreadyFinalizedError(OGPUError, ValidationError):
    """The task is past the point where it could be canceled."""


class TxReceiptTimeoutError(OGPUError, ChainError):
    """No receipt within ``receipt_timeout``: the transaction WAS broadcast and may still be
    mined; look at the account's tasks (``gridtask task show``) before sending again."""

    def __init__(self, what: str, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(f"{what}: no receipt within {timeout} s; the transaction was broadcast and may still "
                         f"be mined: check before publishing again")


class TaskFailedError(OGPUError, TaskFailed):
    """The task ended without a response: its node refused the call (``code``, a
    ``TaskErrorCode``: an unknown function, data the input model refused, a sandbox limit) or
    it was aborted; its payment was refunded."""

    def __init__(self, message: str, *, task_id: str = "", code: int = 0) -> None:
        self.code = code
        super().__init__(message, task_id=task_id)
