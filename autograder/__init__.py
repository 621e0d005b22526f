"""Grading for the course: checking helpers for test cells and the instructor's grading command."""
