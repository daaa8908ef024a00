// Package health runs a VIP's health check (TCP connect, HTTP GET or a
// command started without capabilities) on its schedule, and turns its
// results into healthy or not with rise/fall hysteresis.
package health
