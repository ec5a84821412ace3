"""Reporting: paper tables as cells, reproduction plans, descriptions of a run, reports."""
