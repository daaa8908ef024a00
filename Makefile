# make            build ./arpshare with version and commit stamped in
# make packages   build dist/arpshare_<version>_<arch>.deb and
#                 dist/arpshare-<version>-1.<rpmarch>.rpm (nfpm), with the
#                 man pages, completion and changelog made by packaging/gen;
#                 the version comes from `git describe` (packaging/version.sh),
#                 VERSION=1.2.3 overrides it, DIST=dir sets the output folder
# make lint-packages   packages, then lintian and rpmlint on them
# make test       the tests (as root, for the end-to-end ones)

VERSION ?= $(shell packaging/version.sh)
COMMIT  ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
GOARCH  ?= $(shell go env GOARCH)
DIST    ?= dist
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
RPMARCH := $(if $(filter amd64,$(GOARCH)),x86_64,$(if $(filter arm64,$(GOARCH)),aarch64,$(GOARCH)))
DEB     := $(DIST)/arpshare_$(VERSION)_$(GOARCH).deb
RPM     := $(DIST)/arpshare-$(VERSION)-1.$(RPMARCH).rpm

.PHONY: all build packages lint-packages test clean
all: build

build:
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o arpshare ./cmd/arpshare

$(DIST)/arpshare-linux-$(GOARCH): FORCE
	mkdir -p $(DIST)
	CGO_ENABLED=0 GOOS=linux GOARCH=$(GOARCH) go build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/arpshare

# nfpm expands variables in a few fields only: fill packaging/nfpm.yaml's
# @VARS@ in. Man pages are gzipped with -n so the packages are reproducible.
packages: $(DIST)/arpshare-linux-$(GOARCH)
	rm -rf $(DIST)/gen
	go run ./packaging/gen -version '$(VERSION)' -release 1 -out $(DIST)/gen
	gzip -9n $(DIST)/gen/arpshare.8 $(DIST)/gen/arpshare.toml.5
	gzip -9nc CHANGELOG.md > $(DIST)/gen/changelog.gz
	sed -e 's|@VERSION@|$(VERSION)|g; s|@GOARCH@|$(GOARCH)|g; s|@DIST@|$(DIST)|g' packaging/nfpm.yaml > $(DIST)/nfpm.yaml
	go tool nfpm package -f $(DIST)/nfpm.yaml -p deb -t $(DEB)
	go tool nfpm package -f $(DIST)/nfpm.yaml -p rpm -t $(RPM)
	rm $(DIST)/nfpm.yaml

lint-packages: packages
	lintian --fail-on error $(DEB)
	packaging/rpmlint.sh $(RPM)

test:
	go test -race -count=1 ./...

clean:
	rm -rf dist arpshare

FORCE:
