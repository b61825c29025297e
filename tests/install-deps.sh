#!/bin/sh
# Install what building and testing rategate needs (Debian 12, as root):
# the packages listed in tests/debian-packages.
#
# The web servers and redis-server among them must not start as system
# services: the tests and examples/quickstart.sh start their own, on free
# 127.0.0.1 ports, and a service holding port 80 would even make the next
# server's package fail to configure.  A policy-rc.d that answers 101
# ("action not allowed") stops Debian's maintainer scripts from starting
# them; an existing policy-rc.d is left alone.
set -eu
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
	chmod +x /usr/sbin/policy-rc.d
fi
# Another apt run (unattended-upgrades on a freshly booted machine, a
# second install started beside this one) holds dpkg's lock for a while:
# wait for it, up to 10 minutes, instead of failing at once.
lock="-o DPkg::Lock::Timeout=600"
apt-get $lock update -q
apt-get $lock install -y -q $(grep -v '^#' tests/debian-packages)
