"""The nemesis and the checker (``bbd chaos``): a real cluster under concurrent clients and a
seeded schedule of faults, then every recorded request checked against what the servers
hold. ``schedule`` plans the faults, ``nemesis`` applies them, ``workload`` drives and
records the clients, ``checker`` judges, ``timeline`` draws, ``run`` ties them together."""
