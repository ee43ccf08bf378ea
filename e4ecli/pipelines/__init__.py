"""Batch pipelines: plain functions over iterables of Items that yield one Result per item.

They never print; the CLI layer turns the results into progress bars, tables and exit codes.
"""
