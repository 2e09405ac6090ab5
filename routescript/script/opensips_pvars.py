"""The names of OpenSIPS's core pseudo-variables (the headings of the master manual's Script-CoreVar page),
so that the checker can say that one of them is not implemented here rather than that it is unknown
(`$sdp.line` is an OpenSIPS pseudo-variable; `$sdp_lnie` is a typo)."""

from __future__ import annotations

OPENSIPS_CORE_PVARS = frozenset((
    'Au', 'TS', 'T_branch_idx', 'Tf', 'Ts', 'Tsm', 'aU', 'ad', 'adu', 'ai', 'an', 'ar', 'argv', 'au',
    'auth.alg', 'auth.cnonce', 'auth.nc', 'auth.nonce', 'auth.opaque', 'auth.qop', 'auth.resp', 'cT',
    'cfg_line', 'challenge.algorithm', 'challenge.ck', 'challenge.ik', 'challenge.nonce',
    'challenge.opaque', 'challenge.qop', 'challenge.realm', 'ci', 'cl', 'cs', 'ct', 'ct.fields', 'dP',
    'dd', 'di', 'dip', 'dir', 'dp', 'ds', 'du', 'err.class', 'err.info', 'err.level', 'err.rcode',
    'err.rreason', 'fU', 'fd', 'fn', 'ft', 'fu', 'hdr', 'log_level', 'mb', 'mf', 'mi', 'ml', 'msg.branch',
    'msg.branch.attr', 'msg.branch.duri', 'msg.branch.flag', 'msg.branch.flags', 'msg.branch.last_idx',
    'msg.branch.path', 'msg.branch.q', 'msg.branch.socket', 'msg.branch.uri', 'msg.flag',
    'msg.is_request', 'msg.type', 'oP', 'oU', 'od', 'op', 'ou', 'pU', 'param', 'path', 'pd', 'pn', 'pp',
    'proxy_protocol', 'pu', 'rP', 'rU', 'rb', 'rc', 'rd', 're', 'return', 'rm', 'route', 'route.name',
    'route.type', 'rp', 'rr', 'rs', 'rt', 'ru', 'ru_q', 'sdp', 'sdp.line', 'sdp.session', 'sdp.stream',
    'sdp.stream.idx', 'si', 'socket_in', 'socket_out', 'sp', 'tU', 'td', 'time', 'tn', 'tt', 'tu', 'ua',
    'xlog_level'
))
