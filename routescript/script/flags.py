"""Message and branch flags by name: which bit of ctx.flags / ctx.bflags / Branch.flags a flag is.

OpenSIPS 3 (flags.c get_flag_id_by_name) gives every flag name a bit when the script is loaded, the
same name always the same bit, at most 32 flags of each kind (message flags, branch flags). OpenSIPS 2.x
scripts write numbers (setflag(5)); OpenSIPS 1.x meant bit 5 by that, 2.2+ reads "5" as one more name.

Choice: a number 0..31 is that bit (so bflags stored by older configurations keep their meaning), a
name takes the highest free bit (31 downwards), so a script mixing both styles only runs out when it
really uses more than 32 flags. A number above 31 is a load-time error (a 1.x/2.x script meant a bit
that does not exist). $mf / $bf print the set flags by name (a number for the numbered ones), in the
order the names were first seen, separated by a space (OpenSIPS bitmask_to_flag_list).
"""

from __future__ import annotations

import re

MAX_FLAGS = 32                              # OpenSIPS MAX_FLAG: flags are bits of an unsigned int
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


class FlagNames:
    """The flags of one kind ("message" or "branch") of a loaded configuration. Filled at load time by
    the fixups of setflag() & co.; read at run time only (names())."""

    __slots__ = ("kind", "_bits")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._bits: dict[str, int] = {}     # flag as written ("NAT", "5") -> bit, in first-seen order

    def bit(self, flag: object) -> int:
        """The bit of `flag` (a name or a number 0..31), given one now if it is a new name. Raises
        ValueError with the reason, for the compiler to report at the argument."""
        text = str(flag).strip()
        if text in self._bits:
            return self._bits[text]
        if text.isdigit():
            number = int(text)
            if number >= MAX_FLAGS:
                raise ValueError(f"{self.kind} flag {number} does not exist: numbered flags are 0..31 "
                                 "(give the flag a name to let routescript pick its bit)")
            owner = self._owner(number)
            if owner is not None:
                raise ValueError(f"{self.kind} flag {number}: its bit is taken by the flag named "
                                 f"'{owner}' - all {MAX_FLAGS} {self.kind} flags are in use")
            self._bits[text] = number
            return number
        if not _NAME_RE.match(text):
            raise ValueError(f"bad {self.kind} flag name {text!r} (a word or a number 0..31)")
        used = set(self._bits.values())
        free = next((b for b in range(MAX_FLAGS - 1, -1, -1) if b not in used), None)
        if free is None:
            raise ValueError(f"{self.kind} flag '{text}': all {MAX_FLAGS} {self.kind} flags are in use "
                             "(OpenSIPS allows 32)")
        self._bits[text] = free
        return free

    def mask(self, flag: object) -> int:
        return 1 << self.bit(flag)

    def names(self, bits: int) -> str:
        """The set flags of `bits`, space separated ($mf, $bf)."""
        return " ".join(name for name, bit in self._bits.items() if bits >> bit & 1)

    def _owner(self, bit: int) -> str | None:
        return next((name for name, b in self._bits.items() if b == bit), None)
