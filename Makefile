# Two entry points on a fresh machine: `make run` and `make test`.
# Both create the virtualenv and install what they need themselves.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EXAMPLE ?= examples/medium.yaml

# Debian packages the test suite talks to for real (BMC simulator, IPMI client,
# DHCP/TFTP server and iPXE images, sshd, DHCP client, network namespaces,
# headless browser, Ceph's own service-spec classes, and the virtual rack: QEMU, its iPXE
# NIC ROMs, dropbear for the installer image; the deployable OS image: mmdebstrap, sfdisk,
# GRUB for BIOS and UEFI, OVMF, VFAT tools; the seed's real consumers: cloud-init, netplan;
# the virtual-media deploy ISO: grub-mkrescue (grub-common) driving xorriso and mtools,
# isoinfo (genisoimage) to check it, OVMF to boot it under UEFI; zstd, which the deploy
# ramdisk carries to decompress images and its test compresses them with; nvme-cli and hdparm,
# the drives' own secure erase the deploy ramdisk carries, and mdadm, its RAID1 root; PostgreSQL, the
# shared state store's server, which the tests start as the postgres user).
APT_PACKAGES := ipmitool openipmi dnsmasq ipxe openssh-server busybox iproute2 chromium python3-ceph-common \
                qemu-system-x86 ipxe-qemu dropbear-bin \
                mmdebstrap fdisk qemu-utils grub-pc-bin grub-efi-amd64-bin ovmf dosfstools mtools \
                cloud-init netplan.io \
                xorriso grub-common genisoimage zstd nvme-cli hdparm mdadm \
                postgresql

.PHONY: run test system-deps venv bench notebook clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,notebook,lab]'
	@# the packing's local search is compiled (numba) on first import and cached: do it now (about 20 s)
	$(BIN)/python -c "import cloudplan.sizing.packing.moves"
	touch $@

venv: $(STAMP)

# Installs the Debian packages only when running as root and only when missing,
# so a developer without root still gets the Python-only part of the suite.
system-deps:
	@if [ "$$(id -u)" = 0 ]; then \
	  missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "Installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  fi; \
	else echo "Not root: skipping Debian packages ($(APT_PACKAGES))"; fi

run: $(STAMP)
	$(BIN)/cloudplan size $(EXAMPLE)

# pytest exits 5 when it collected no test: that is a failure here, never a pass.
test: system-deps $(STAMP)
	@$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "Error: pytest collected no tests"; exit 1; fi; exit $$rc

bench: $(STAMP)
	$(BIN)/cloudplan bench size

notebook: $(STAMP)
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
