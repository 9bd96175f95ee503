"""A market as the platform operator opens it: its own party, the regulator it onboards, and
every other party onboarded and admitted by the one the domain requires; each of them holds
a registered key and signs its decisions."""

from __future__ import annotations

from collections.abc import Callable

from client.platform import ADMITTED, Party, Platform


def fixed_credit_code(role: str) -> str:
    """A fixed unified social credit code per role (the tests' and benchmarks' parties)."""
    return "91110000MA01ABCDE" + role[0].upper()


class Market:
    """The platform operator (the admin token's party) and the regulator of one platform."""

    def __init__(self, api: Platform, admin_token: str, regulator: str, *,
                 credit_code: Callable[[str, str], str] | None = None,
                 comment: str = ADMITTED) -> None:
        """Onboard the regulator named ``regulator``; ``credit_code(role, name)`` gives each
        new party's code (a fixed one per role by default); ``comment`` is the admission's."""
        self.api = api
        self.platform = api.give_key(api.party(admin_token))
        self.comment = comment
        self.credit_code = credit_code or (lambda role, name: fixed_credit_code(role))
        self.regulator = self.onboard("regulator", regulator)

    def judge(self, role: str) -> Party:
        """Who admits a participant of ``role``: the regulator selects the operators
        (白皮书 5.1.1), the platform admits the rest."""
        return self.regulator if role == "operator" else self.platform

    def onboard(self, role: str, name: str, *, admit: bool = True) -> Party:
        """Register a participant and, unless ``admit`` is false, have it admitted."""
        return self.api.onboard(self.platform, role, name,
                                credit_code=self.credit_code(role, name),
                                judge=self.judge(role) if admit else None, comment=self.comment)
