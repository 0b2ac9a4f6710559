"""raddiag.evaluation"""
