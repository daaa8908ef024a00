# make            build ./arpshare with version and commit stamped in
# make packages   build dist/arpshare_<version>_<arch>.deb and .rpm (nfpm);
#                 VERSION=1.2.3 sets the version, DIST=dir the output folder
# make test       the tests (as root, for the end-to-end ones)

VERSION ?= 0.1.0
COMMIT  ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
GOARCH  ?= $(shell go env GOARCH)
DIST    ?= dist
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)

.PHONY: all build packages test clean
all: build

build:
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o arpshare ./cmd/arpshare

$(DIST)/arpshare-linux-$(GOARCH): FORCE
	mkdir -p $(DIST)
	CGO_ENABLED=0 GOOS=linux GOARCH=$(GOARCH) go build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/arpshare

# nfpm expands variables in a few fields only: fill packaging/nfpm.yaml's
# @VARS@ in.
packages: $(DIST)/arpshare-linux-$(GOARCH)
	sed -e 's|@VERSION@|$(VERSION)|g; s|@GOARCH@|$(GOARCH)|g; s|@DIST@|$(DIST)|g' packaging/nfpm.yaml > $(DIST)/nfpm.yaml
	go tool nfpm package -f $(DIST)/nfpm.yaml -p deb -t $(DIST)/arpshare_$(VERSION)_$(GOARCH).deb
	go tool nfpm package -f $(DIST)/nfpm.yaml -p rpm -t $(DIST)/arpshare_$(VERSION)_$(GOARCH).rpm
	rm $(DIST)/nfpm.yaml

test:
	go test -race -count=1 ./...

clean:
	rm -rf dist arpshare

FORCE:
