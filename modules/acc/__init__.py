"""acc - accounting (OpenSIPS 3.4 acc): transactions, missed calls and CDRs as log lines and rows of the
acc / missed_calls tables. docs/modules/acc.md."""

from .module import AccContext, AccModule

MODULE = AccModule

__all__ = ["MODULE", "AccContext", "AccModule"]
