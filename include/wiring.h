/*
 * wiring.h: the callbacks through which a lower layer reaches a higher one,
 * connected in one place (the layers: scripts/check-layers.py).  Each lower
 * module offers a registration; this module, in the process layer, knows
 * every module and passes each the functions of the ones above it.
 */
#ifndef PGFLEET_WIRING_H
#define PGFLEET_WIRING_H

/* Connects every module.  Called once, from main() before any loop is set
 * up (and by the fuzz driver).  Must not: be called once loops run (the
 * hook lists are read without a lock). */
void wiring_connect(void);

#endif
