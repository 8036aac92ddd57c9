"""The long-running loops: rule evaluation, notifications, commands, leases, periodic jobs,
and the processes that run them (`serve`'s background, `iotdeck worker`)."""
