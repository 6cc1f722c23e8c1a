"""The results as a static web site (`slimbench site RESULTS OUT`): the leaderboard rows of every suite (the report's
own rows and noise marks), each task's Pareto plot, the replication lines and the reproduction tables, as HTML pages
that link every accuracy figure to a copy of its run record and open from the file system with no server, network
or library; `data` reads the records once, `tables` turns rows into cells, `plots` draws the SVGs, `build` renders
and writes, byte for byte the same for the same records.
"""
