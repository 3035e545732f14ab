"""The job's money: every fragment's fee comes out of one budget that is never exceeded.

The rule (issue 10): at every moment the fees escrowed on chain plus the fees paid out are at
most the budget. A fragment reserves its worst case before its task is created (three fees
when the network may sample it into a group of three, whose two extra fees come back once the
group agrees), keeps what was escrowed once its task is on chain, and settles when it ends: the
fee paid, or refunded. A fragment that cannot fit waits for others to settle; one that could
never fit (the budget is spent) raises ``BudgetExceeded``.
"""

from __future__ import annotations

import asyncio

from gridtask.exceptions import GridtaskError

ETHER = 10**18


class BudgetExceeded(GridtaskError):
    """The next fragment's fee does not fit in what is left of the budget: raise the budget,
    or lower the fee per fragment."""


class Budget:
    """``total`` wei: ``escrowed`` (reserved or locked on chain) plus ``spent`` never pass it."""

    def __init__(self, total: int) -> None:
        if isinstance(total, bool) or not isinstance(total, int) or total <= 0:
            raise GridtaskError(f"budget: a positive amount (got {total!r})")
        self.total = total
        self.escrowed = 0
        self.spent = 0
        self.refunded = 0
        self._changed = asyncio.Event()

    def __repr__(self) -> str:
        return f"Budget(total={self.total}, escrowed={self.escrowed}, spent={self.spent})"

    @property
    def left(self) -> int:
        return self.total - self.escrowed - self.spent

    async def reserve(self, amount: int) -> int:
        """Hold ``amount`` for a fragment, waiting while other fragments hold what it needs."""
        while amount > self.left:
            if amount > self.total - self.spent or not self.escrowed:
                raise BudgetExceeded(
                    f"budget: a fragment needs {amount} wei and {self.left} of {self.total} is left "
                    f"({self.spent} spent, {self.escrowed} held by fragments in flight)")
            self._changed.clear()
            await self._changed.wait()
        self.escrowed += amount
        self._check()
        return amount

    def shrink(self, held: int, to: int) -> int:
        """What a fragment holds, down to what its task really escrowed."""
        if to > held:
            raise GridtaskError(f"budget: a fragment cannot grow its hold from {held} to {to} wei")
        self.escrowed -= held - to
        self._wake()
        return to

    def settle(self, held: int, paid: int) -> None:
        """A fragment ended: ``paid`` of what it held went to nodes, the rest came back."""
        if not 0 <= paid <= held:
            raise GridtaskError(f"budget: a fragment holding {held} wei cannot pay {paid}")
        self.escrowed -= held
        self.spent += paid
        self.refunded += held - paid
        self._check()
        self._wake()

    def _check(self) -> None:
        if self.escrowed < 0 or self.escrowed + self.spent > self.total:
            raise GridtaskError(f"budget broken: {self!r}")  # a bug here, never the caller's

    def _wake(self) -> None:
        self._changed.set()
