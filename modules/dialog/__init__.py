"""dialog - call tracking (OpenSIPS dialog module): docs/modules/dialog.md.

The Python API for other modules (pua_dialoginfo, acc) is api.py: `bind_dialog(server)`.
"""

from .api import DLG_FLAG_ACC_CDR, DLG_FLAG_PUA_DIALOGINFO, DialogApi, DialogInfo, DlgState, bind_dialog
from .module import DialogModule

MODULE = DialogModule

__all__ = ["DLG_FLAG_ACC_CDR", "DLG_FLAG_PUA_DIALOGINFO", "MODULE", "DialogApi", "DialogInfo",
           "DialogModule", "DlgState", "bind_dialog"]
