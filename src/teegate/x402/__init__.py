"""x402 at the gateway: what a caller without an API key is asked to pay (issue 15)."""
