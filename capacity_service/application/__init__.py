"""The service layer, without Ray: a pool's single writer (``pool_writer``), many pools in one process
(``pool_host``), recovery and the snapshot policy, the circuit breaker, what a pool publishes, the
availability index, and the warehouse stream's logic. It uses the domain and the adapters' ports; the
runtime hosts it in Ray actors."""
