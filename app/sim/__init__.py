"""The demo's simulated devices: signals, firmware, and the simulator that publishes them."""
