"""Turning model scores into tokens: sampling (temperature, top-k, top-p) and streamed generation."""
