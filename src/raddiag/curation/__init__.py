"""raddiag.curation"""
