"""The virtual rack: QEMU machines behind IPMI BMCs on a PXE network, to rehearse bring-up.

:mod:`cloudplan.lab.rack` makes and removes it, :mod:`cloudplan.lab.daemon`
runs its BMCs, :mod:`cloudplan.lab.machine` powers its VMs and
:mod:`cloudplan.lab.image` builds the installer they network-boot.
"""
