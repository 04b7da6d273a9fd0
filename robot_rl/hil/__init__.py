"""Human in the loop: teleop devices and the intervention logic that lets an operator take over."""
