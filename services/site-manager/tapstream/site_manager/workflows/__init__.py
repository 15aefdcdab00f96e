"""The recovery operations' steps, one module per workflow: the failover test (`failover_test`),
failover and move (`failover`), reverse and failback (`failback`). Each step function takes the
`Context` (the parts of the site manager a workflow uses), the operation id, the group and the
checkpoint reference, and returns the operation's result; the runner (`site_manager.runner`)
records it and dispatches by kind."""
