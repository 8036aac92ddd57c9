"""What `serve` adds around its pages and API: HTTPS, sign-in, SSO, rate limits, request ids,
probes and a graceful close."""
