"""Reading a finished run: the report, the judge of a claim, plots, popularity
buckets, markdown tables, comparisons and statistics over seeds.  Views read
run directories and ask a method what it declares; they write no ticket."""
