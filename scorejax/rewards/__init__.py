"""Rewards: answer extraction and verification, and game outcomes."""
