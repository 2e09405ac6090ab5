"""Secrets out of the script: `$env(NAME)` inside a modparam value (and a string core parameter such
as db_default_url) is replaced, at load time, by the environment variable NAME.

    modparam("presence", "db_url", "postgres://opensips:$env(DB_PASS)@127.0.0.1/opensips")

Choice (OpenSIPS has no substitution in modparam values: it offers `-p` to pipe the cfg through a
preprocessor such as m4 or jinja2, and `$env(NAME)` as cfgutils' pseudo-variable in routes): the spelling
of that pseudo-variable, so a reader recognises it, and nothing else - no `${VAR}` (a `$` followed by a
brace is left as it is), no default values. A variable that is not set is a load-time error at the
modparam's line, never an empty password. A value without `$env(` is untouched.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

# $env(NAME): NAME as POSIX names environment variables (letters, digits, '_'; not first a digit)
ENV_REF = re.compile(r"\$env\(([^()]*)\)")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def expand_env(value: object, environ: Mapping[str, str] | None = None) -> object:
    """`value` with every $env(NAME) replaced; anything but a string is returned as it is. ValueError
    naming the variable when it is unset or not a valid name."""
    if not isinstance(value, str) or "$env(" not in value:
        return value
    env = os.environ if environ is None else environ

    def one(m: re.Match[str]) -> str:
        name = m.group(1)
        if not _NAME.match(name):
            raise ValueError(f"$env({name}): not an environment variable name")
        if name not in env:
            raise ValueError(f"$env({name}): environment variable {name} is not set")
        return env[name]

    return ENV_REF.sub(one, value)
