"""The typed AST of an OpenSIPS configuration script.

Every node is a frozen, slotted dataclass carrying `pos: Pos(file, line, col)` (1-based line and column;
`file` names the included file for nodes that come from `include_file`). The parser builds it
(routescript/script/parser.py); the compiler turns it into Python coroutines (compiler.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from typing import TYPE_CHECKING

from .pos import Pos

if TYPE_CHECKING:
    from .diagnostics import Diagnostic


# ---------------------------------------------------------------------------------------------------
# Global part
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SocketSpec:
    """A `socket=`/`listen=` value: [proto:]host[:port] [as host[:port]] [use_workers N] [anycast] ...

    str() gives `proto:host:port` plus ` as <advertised>` when present (what the core's parse_socket reads).
    """

    proto: str | None
    host: str
    port: int | None
    advertised: str | None = None
    workers: int | None = None
    tag: str | None = None
    flags: tuple[str, ...] = ()  # "anycast", "reuse_port", "frag"
    text: str = ""               # the address as written

    def __str__(self) -> str:
        return self.text + (f" as {self.advertised}" if self.advertised else "")


GlobalValue = int | bool | str | SocketSpec


@dataclass(frozen=True, slots=True)
class GlobalParam:
    """`name = value`: value is int (3, -1, 0x10), bool (yes/no/on/off/true/false), str (a quoted string
    or a bare word such as LOG_LOCAL0 or example.com) or SocketSpec (proto:host:port forms, and any
    value of socket/listen)."""

    name: str
    value: GlobalValue
    pos: Pos
    quoted: bool = False  # the value was a quoted string


@dataclass(frozen=True, slots=True)
class LoadModule:
    path: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class ModParam:
    """modparam("module", "param", value); module may be "a;b" or a regex: the core resolves it."""

    module: str
    param: str
    value: int | str
    pos: Pos


# ---------------------------------------------------------------------------------------------------
# Expressions
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Transform:
    """{name,param,...}; params are str/int literals or pseudo-variables (evaluated per message)."""

    name: str
    params: tuple[str | int | PVar, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class PVar:
    """$name, $name(key), $(name(key)[index]{transform}...).

    index: None, an int (-1 = last), "*" (all) or a PVar evaluated per message.
    context: the `<request>`/`<reply>` prefix of $(<reply>name), or None.
    """

    name: str
    key: str | None
    index: int | str | PVar | None
    transforms: tuple[Transform, ...]
    text: str
    pos: Pos
    context: str | None = None


@dataclass(frozen=True, slots=True)
class IntLit:
    value: int
    pos: Pos


@dataclass(frozen=True, slots=True)
class StrLit:
    """A string literal. `value` is the unescaped text; `parts` splits it into text and embedded
    pseudo-variables ("$fu to $ru" -> (PVar fu, " to ", PVar ru)); a string without `$` has parts (value,)."""

    value: str
    parts: tuple[str | PVar, ...]
    pos: Pos

    @property
    def is_constant(self) -> bool:
        return all(isinstance(p, str) for p in self.parts)


@dataclass(frozen=True, slots=True)
class NullLit:
    pos: Pos


@dataclass(frozen=True, slots=True)
class IpLit:
    """An IP address or network as a value: `$si == 10.0.0.0/8`, `$si != ::1` (routescript.script.ipmatch).
    A bare address is the network of that one address; it is only compared with == and !=."""

    network: IPv4Network | IPv6Network
    text: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class Ident:
    """A bare word as a function argument: setflag(NAT), t_on_failure(missed). Passed as a string."""

    name: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class BinOp:
    """op: "||" "&&" "==" "!=" "<" ">" "<=" ">=" "=~" "!~" "|" "^" "&" "<<" ">>" "+" "-" "*" "/" "%"."""

    op: str
    left: Expr
    right: Expr
    pos: Pos


@dataclass(frozen=True, slots=True)
class UnaryOp:
    """op: "!" (also `not`), "~", "-"."""

    op: str
    operand: Expr
    pos: Pos


@dataclass(frozen=True, slots=True)
class Call:
    """A script function call, as a statement or a condition. An omitted argument (f(a,,c)) is None."""

    name: str
    args: tuple[Expr | Ident | None, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class RouteCall:
    """route(name[, arg...]); the args are $param(1).. in the called route."""

    name: str
    args: tuple[Expr | Ident | None, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class CoreTest:
    """An OpenSIPS 1.x/2.x core-keyword condition, as written (removed in OpenSIPS 2.4; compile_legacy.py
    gives it the 2.x meaning): `method == "INVITE"`, `uri =~ "^sip:1"`, `src_ip == 10.0.0.0/8`,
    `src_port != 5060`, `proto == UDP`, `af == INET6`, `msg:len > max_len`.

    keyword: "method" "uri" "status" "from_uri" "to_uri" "src_ip" "dst_ip" "src_port" "dst_port" "proto"
             "af" "msg:len".
    value: the literal's text (a quoted string unescaped, or the bare word); quoted tells which.
    """

    keyword: str
    op: str
    value: str
    quoted: bool
    pos: Pos


@dataclass(frozen=True, slots=True)
class Myself:
    """`X == myself` / `X != myself` (2.x also wrote `myself == X`): whether X names this server, as
    is_myself(X). subject: a core keyword ("uri", "from_uri", "to_uri", "status", "src_ip", "dst_ip") or
    an expression (`$var(host) == myself`)."""

    subject: str | Expr
    negated: bool
    pos: Pos


Expr = PVar | IntLit | StrLit | NullLit | IpLit | BinOp | UnaryOp | Call | RouteCall | CoreTest | Myself


# ---------------------------------------------------------------------------------------------------
# Statements
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Block:
    stmts: tuple[Stmt, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class If:
    cond: Expr
    then: Stmt
    orelse: Stmt | None
    pos: Pos


@dataclass(frozen=True, slots=True)
class Case:
    """`case value:` (value int or str) or `default:` (value None, is_default True)."""

    value: int | str | None
    body: tuple[Stmt, ...]
    pos: Pos
    is_default: bool = False


@dataclass(frozen=True, slots=True)
class Switch:
    subject: Expr
    cases: tuple[Case, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class While:
    cond: Expr
    body: Stmt
    pos: Pos


@dataclass(frozen=True, slots=True)
class ForEach:
    """for ($var(x) in $(avp(y)[*])) body"""

    var: PVar
    iterable: PVar
    body: Stmt
    pos: Pos


@dataclass(frozen=True, slots=True)
class Assign:
    """target op value; op one of = := += -= *= /= %= |= &="""

    target: PVar
    op: str
    value: Expr
    pos: Pos


@dataclass(frozen=True, slots=True)
class Return:
    value: Expr | None
    pos: Pos


@dataclass(frozen=True, slots=True)
class Exit:
    pos: Pos


@dataclass(frozen=True, slots=True)
class Drop:
    pos: Pos


@dataclass(frozen=True, slots=True)
class Break:
    pos: Pos


@dataclass(frozen=True, slots=True)
class Async:
    """async(func(args), resume_route)"""

    call: Call
    resume_route: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class Launch:
    """launch(func(args)[, report_route[, ...]])"""

    call: Call
    routes: tuple[str, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class Assert:
    """assert(expr, "message"), or master's assert(expr) whose message is None."""

    cond: Expr
    message: str | None
    pos: Pos


Stmt = (Block | If | Switch | While | ForEach | Assign | Call | RouteCall | Return | Exit | Drop | Break
        | Async | Launch | Assert)


# ---------------------------------------------------------------------------------------------------
# Routes and the script
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RouteDef:
    """A route block.

    kind: a routescript.script.context *_ROUTE value ("request", "onreply", "failure", ...).
    name: None for the main request route (`route`, `route[0]`, `route[main]`) and the global
          onreply_route, startup_route, local_route and error_route; otherwise the name in brackets.
    params: what follows the name: (interval,) for timer_route, ("async",)/("sync",) for event_route.
    """

    kind: str
    name: str | None
    params: tuple[int | str, ...]
    body: Block
    pos: Pos

    @property
    def interval(self) -> int | None:
        if self.params and isinstance(self.params[0], int):
            return self.params[0]
        return None


@dataclass(frozen=True, slots=True)
class Script:
    globals: list[GlobalParam] = field(default_factory=list)
    loadmodules: list[LoadModule] = field(default_factory=list)
    modparams: list[ModParam] = field(default_factory=list)
    routes: list[RouteDef] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)  # severity "warning"
    files: tuple[str, ...] = ()  # the main file, then every included one
    texts: dict[str, str] = field(default_factory=dict, repr=False, compare=False)  # file -> its text
