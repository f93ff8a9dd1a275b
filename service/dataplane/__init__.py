"""The transport-free serving core: parse, plan and run an operation on a served model, under
admission control, body budgets, the request deadline and optional dynamic batching; the served
state and its reload."""
