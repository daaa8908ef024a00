// Package packaging holds the systemd unit, the nfpm config, the maintainer
// scripts and the default config of the .deb and .rpm; its test builds both
// packages and checks them.
package packaging
