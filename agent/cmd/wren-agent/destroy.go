package main

import "errors"

// errSandboxDestroyed is the power-off reason after DestroySandbox: as PID
// 1 the agent ends once it answered DestroySandbox (rpc.Options.
// AfterDestroy), and so powers the VM off.
var errSandboxDestroyed = errors.New("sandbox destroyed")
