"""Expression code generation: AST expressions, strings, pseudo-variables and transformations -> Python
source text, and the bookkeeping (namespace bindings, emitted lines, diagnostics) every generator shares.

_ExprGen is the base of the generator (compile_call._CallGen, compile_stmt._StmtGen, compiler._Gen)."""

from __future__ import annotations

from typing import Any

from . import ast, compile_legacy, ipmatch
from . import runtime as rt
from .pos import Pos
from .diagnostics import Diagnostic, SourceLines
from .opensips_pvars import OPENSIPS_CORE_PVARS
from .registry import PVarSpec, Registry


class _Failed(Exception):
    """An expression that could not be compiled (already reported)."""


_CMP = {"==": "_rt.eq", "!=": "_rt.ne", "<": "_rt.lt", ">": "_rt.gt", "<=": "_rt.le", ">=": "_rt.ge"}
_MAX_ERRORS = 200


class _ExprGen:
    def __init__(self, script: ast.Script, registry: Registry | None, max_loops: int, asserts: bool,
                 abort_on_assert: bool = False) -> None:
        self.script = script
        self.registry = registry
        self.max_loops = max_loops
        self.asserts = asserts
        self.abort_on_assert = abort_on_assert
        self.errors: list[Diagnostic] = []
        self.sources = SourceLines()
        self.ns: dict[str, Any] = {"_rt": rt, "_Exit": rt.ExitScript, "_Drop": rt.DropScript}
        self.lines: list[str] = []
        self.line_pos: list[Pos | None] = []
        self.counter = 0
        self.defs: dict[tuple[str, str | None], ast.RouteDef] = {}
        self.fn_names: dict[tuple[str, str | None], str] = {}
        self.kinds: dict[tuple[str, str | None], set[str]] = {}
        self.awaiting: set[tuple[str, str | None]] = set()   # routes that await an async function
        self._current: ast.RouteDef | None = None
        self._loop_depth = 0
        self._pv_cache: dict[tuple[Any, ...], str] = {}
        for f, text in script.texts.items():
            self.sources.add(f, text)

    # -- bookkeeping ---------------------------------------------------------------------------------
    def error(self, pos: Pos, message: str) -> None:
        if len(self.errors) < _MAX_ERRORS:
            self.errors.append(self.sources.diag(pos, message))

    def bind(self, obj: Any, prefix: str = "_k") -> str:
        self.counter += 1
        name = f"{prefix}{self.counter}"
        self.ns[name] = obj
        return name

    def emit(self, indent: int, text: str, pos: Pos | None) -> None:
        self.lines.append("    " * indent + text)
        self.line_pos.append(pos)


    # -- calls: compiled by compile_call._CallGen (the subclass) ----------------------------------------
    def call(self, c: ast.Call) -> str:
        raise NotImplementedError

    def route_call(self, c: ast.RouteCall) -> str:
        raise NotImplementedError

    # -- expressions -----------------------------------------------------------------------------------
    def cond(self, e: Any) -> str:
        """Python expression giving a bool."""
        if isinstance(e, ast.BinOp):
            if e.op == "&&":
                return f"({self.cond(e.left)} and {self.cond(e.right)})"
            if e.op == "||":
                return f"({self.cond(e.left)} or {self.cond(e.right)})"
            if e.op in _CMP or e.op in ("=~", "!~"):
                return self.value(e)
        if isinstance(e, ast.UnaryOp) and e.op == "!":
            return f"(not {self.cond(e.operand)})"
        if isinstance(e, (ast.Call, ast.RouteCall)):
            return f"({self.value(e)} > 0)"
        if isinstance(e, (ast.CoreTest, ast.Myself)):  # lang2x: OpenSIPS 2.x `method == "X"`, `uri == myself`
            return self._legacy(e)
        return f"_rt.truth({self.value(e)})"

    def _legacy(self, e: ast.CoreTest | ast.Myself) -> str:
        try:
            return compile_legacy.condition(self, e)
        except compile_legacy.Failed:
            raise _Failed from None

    def value(self, e: Any) -> str:
        """Python expression giving the value (str, int or None)."""
        if isinstance(e, ast.IntLit):
            return repr(e.value)
        if isinstance(e, ast.NullLit):
            return "None"
        if isinstance(e, ast.StrLit):
            return self.string(e)
        if isinstance(e, ast.Ident):
            return repr(e.name)
        if isinstance(e, ast.IpLit):  # compared in _ip_compare; anywhere else it has no value
            self.error(e.pos, f"an IP address or network ({e.text}) is a value only in == and != "
                              f"comparisons; quote it to use it as a string")
            raise _Failed
        if isinstance(e, ast.PVar):
            return self.pvar_get(e)
        if isinstance(e, ast.Call):
            return self.call(e)
        if isinstance(e, ast.RouteCall):
            return self.route_call(e)
        if isinstance(e, ast.UnaryOp):
            if e.op == "!":
                return f"(0 if {self.cond(e.operand)} else 1)"
            return f"_rt.{'neg' if e.op == '-' else 'bit_not'}({self.value(e.operand)})"
        if isinstance(e, (ast.CoreTest, ast.Myself)):
            return f"(1 if {self._legacy(e)} else 0)"
        if isinstance(e, ast.BinOp):
            if e.op in ("&&", "||"):
                return f"(1 if {self.cond(e)} else 0)"
            if isinstance(e.left, ast.IpLit) or isinstance(e.right, ast.IpLit):
                return self._ip_compare(e)
            if e.op in _CMP:
                return f"{_CMP[e.op]}({self.value(e.left)}, {self.value(e.right)})"
            if e.op in ("=~", "!~"):
                rx = self.regex(e.right)
                if rx.isidentifier():   # a literal, compiled at load: runtime.match's test written in place
                    m = (f"((_m := {self.value(e.left)}) is not None and "
                         f"{rx}.search(_m if type(_m) is str else _rt.to_str(_m)) is not None)")
                else:
                    m = f"_rt.match({self.value(e.left)}, {rx})"
                return m if e.op == "=~" else f"(not {m})"
            if e.op == "+":
                return f"_rt.add({self.value(e.left)}, {self.value(e.right)})"
            return f"_rt.arith({e.op!r}, {self.value(e.left)}, {self.value(e.right)})"
        self.error(getattr(e, "pos", Pos("?", 1, 1)), f"unsupported expression {type(e).__name__}")
        raise _Failed

    def _ip_compare(self, e: ast.BinOp) -> str:
        """`$si == 10.0.0.0/8`: the network was parsed at load; the bound closure tests the address
        (OpenSIPS allows the network on the right only; either side is accepted here)."""
        net, other = (e.right, e.left) if isinstance(e.right, ast.IpLit) else (e.left, e.right)
        assert isinstance(net, ast.IpLit)
        if e.op not in ("==", "!=") or isinstance(other, ast.IpLit):
            self.error(e.pos, f"an IP address or network ({net.text}) can only be compared with == or != "
                              f"against a value (address in network)")
            raise _Failed
        test = self.bind(ipmatch.network_test(net.network, negate=e.op == "!="), "_n")
        return f"{test}({self.value(other)})"

    def regex(self, e: Any) -> str:
        if isinstance(e, ast.StrLit):  # a literal: compiled once, here
            try:
                return self.bind(rt.compile_script_regex(e.value), "_x")
            except ValueError as exc:
                self.error(e.pos, str(exc))
                raise _Failed from None
        return f"_rt.dyn_regex({self.value(e)})"

    def string(self, s: ast.StrLit) -> str:
        if s.is_constant:
            return repr(s.value)
        pieces: list[str] = []
        for p in s.parts:
            if isinstance(p, str):
                pieces.append(repr(p))
            else:
                pieces.extend(self._embedded(p))
        return "''.join((" + ", ".join(pieces) + ",))"

    def _embedded(self, pv: ast.PVar) -> list[str]:
        """A pseudo-variable inside a string; "$rU.example" with no $rU.example class reads
        $rU + ".example"."""
        if self.registry is not None and pv.name not in self.registry.pvars and "." in pv.name \
                and pv.key is None and pv.index is None and not pv.transforms:
            head, _, tail = pv.name.partition(".")
            if head in self.registry.pvars:
                short = ast.PVar(head, None, None, (), "$" + head, pv.pos, pv.context)
                return [f"_rt.to_text({self.pvar_get(short)})", repr("." + tail)]
        return [f"_rt.to_text({self.pvar_get(pv)})"]

    # -- pseudo-variables ----------------------------------------------------------------------------
    def resolve(self, pv: ast.PVar) -> PVarSpec | None:
        if not pv.name:
            raise _Failed  # a syntax error already reported
        if pv.context is not None:
            self.error(pv.pos, f"{pv.text}: the <{pv.context}> context is not supported")
            raise _Failed
        if self.registry is None:
            return None
        spec = self.registry.pvars.get(pv.name)
        if spec is None:
            if pv.name in OPENSIPS_CORE_PVARS:
                self.error(pv.pos, f"${pv.name} is an OpenSIPS pseudo-variable that routescript does not "
                                   f"implement")
            else:
                self.error(pv.pos, f"unknown pseudo-variable ${pv.name}")
            raise _Failed
        if spec.key == "required" and pv.key is None:
            self.error(pv.pos, f"${pv.name} needs a name in parentheses: ${pv.name}(...)")
            raise _Failed
        if spec.key == "none" and pv.key is not None:
            self.error(pv.pos, f"${pv.name} takes no name in parentheses (got {pv.text})")
            raise _Failed
        if pv.key is not None and spec.check_key is not None:
            try:
                spec.check_key(pv.key)
            except ValueError as exc:
                self.error(pv.pos, f"{pv.text}: {exc}")
                raise _Failed from None
        return spec

    def _index(self, pv: ast.PVar) -> str:
        if isinstance(pv.index, ast.PVar):
            return f"_rt.to_int({self.pvar_get(pv.index)})"
        return repr(pv.index)

    def _index_word(self, pv: ast.PVar, spec: PVarSpec | None, assigned: bool) -> None:
        """A named index ([append], [insert]) means something only to the pseudo-variable that lists it,
        and only when assigned (OpenSIPS: PV_IDX_APPEND / SDP_PV_IDX_INSERT are write positions)."""
        if spec is None or not isinstance(pv.index, str) or pv.index == "*":
            return
        if pv.index not in spec.index_words:
            takes = ", ".join(f"[{w}]" for w in sorted(spec.index_words)) or "no named index"
            self.error(pv.pos, f"{pv.text}: ${pv.name} takes {takes}, not [{pv.index}]")
            raise _Failed
        if not assigned:
            self.error(pv.pos, f"{pv.text}: [{pv.index}] names a position to assign, not a value to read")
            raise _Failed

    def pvar_get(self, pv: ast.PVar) -> str:
        spec = self.resolve(pv)
        self._index_word(pv, spec, assigned=False)
        index = self._index(pv)
        if spec is None:
            code = "None"
        else:
            g = self.bind(spec.getter, "_g")
            code = f"{g}(ctx, {pv.key!r}, {index})"
        for tr in pv.transforms:
            site = self.transform(tr)
            code = f"{site}(ctx, {code})" if site else code
        return code

    def pvar_set(self, pv: ast.PVar, index: str | None = None) -> str:
        """A statement template with {value}."""
        spec = self.resolve(pv)
        if spec is None:
            return "pass  # {value}"
        if spec.setter is None:
            self.error(pv.pos, f"${pv.name} is read-only: it cannot be assigned")
            raise _Failed
        self._index_word(pv, spec, assigned=True)
        s = self.bind(spec.setter, "_s")
        idx = index if index is not None else self._index(pv)
        return f"{s}(ctx, {pv.key!r}, {idx}, {{value}})"

    def transform(self, tr: ast.Transform) -> str | None:
        for p in tr.params:
            if isinstance(p, ast.PVar):
                self.pvar_get(p)  # checked even without a registry
        if self.registry is None:
            return None
        spec = self.registry.transforms.get(tr.name)
        if spec is None:
            self.error(tr.pos, f"unknown transformation {{{tr.name}}}")
            raise _Failed
        params = list(tr.params)
        if len(params) > spec.max_params and spec.max_params > 0 and \
                all(not isinstance(p, ast.PVar) for p in params[spec.max_params - 1:]):
            # the last parameter may itself hold commas ({s.select,1,,} / a regex): join the rest back
            tail = ",".join(str(p) for p in params[spec.max_params - 1:])
            params = params[:spec.max_params - 1] + [tail]
        if not spec.min_params <= len(params) <= spec.max_params:
            want = (f"{spec.min_params}" if spec.min_params == spec.max_params
                    else f"{spec.min_params} to {spec.max_params}")
            self.error(tr.pos, f"{{{tr.name}}} takes {want} parameter{'s' if spec.max_params != 1 else ''}, "
                               f"got {len(params)}")
            raise _Failed
        dynamic = any(isinstance(p, ast.PVar) for p in params)
        values: list[Any] = []
        if dynamic:
            for p in params:
                if isinstance(p, ast.PVar):
                    code = self.pvar_get(p)
                    values.append(eval(f"lambda ctx: {code}", self.ns))  # noqa: S307 - our generated code
                else:
                    values.append(p)
        else:
            values = params
            if spec.fixup is not None:
                try:
                    values = list(spec.fixup(tuple(values)))
                except ValueError as exc:
                    self.error(tr.pos, f"{{{tr.name}}}: {exc}")
                    raise _Failed from None
        site = rt.TransformSite(tr.name, spec.fn, tuple(values), dynamic, spec.fixup, tr.pos)
        return self.bind(site, "_t")
