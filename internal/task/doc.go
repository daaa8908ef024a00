// Package task runs the daemon's long-running parts under one supervisor
// (an errgroup, as corerad does): the tasks of the daemon's life, whose
// failure stops them all, and those the config starts and stops, whose
// failure is logged while the others serve on.
package task
