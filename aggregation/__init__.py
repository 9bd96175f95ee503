"""The platform's aggregation node of joint computations (white paper 5.2.2, 6.1)."""
