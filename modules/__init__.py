"""OpenSIPS-style modules, one package each; importable as routescript.modules.<name>."""
