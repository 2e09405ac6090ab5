"""dialog - call tracking (OpenSIPS dialog module). The Python API for other modules is api.py."""

from .api import DLG_FLAG_ACC_CDR, DLG_FLAG_PUA_DIALOGINFO, DialogApi, DialogInfo, DlgState, bind_dialog

__all__ = ["DLG_FLAG_ACC_CDR", "DLG_FLAG_PUA_DIALOGINFO", "DialogApi",
           "DialogInfo", "DlgState", "bind_dialog"]
