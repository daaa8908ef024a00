//go:build race

package arp

const raceEnabled = true
