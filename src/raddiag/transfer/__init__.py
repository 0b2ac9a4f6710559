"""raddiag.transfer"""
