"""raddiag.data.adapters"""
