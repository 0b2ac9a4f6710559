"""raddiag.data"""
