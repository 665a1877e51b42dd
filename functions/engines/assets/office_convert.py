# Converts one document in a running LibreOffice (started with --accept=pipe,name=NAME)
# over UNO: python3 office_convert.py NAME SRC DST FILTER. Run by Debian's python3, which
# has the `uno` module (package python3-uno). Exit status 0 on success.
import sys
import time

import uno
from com.sun.star.beans import PropertyValue
from com.sun.star.connection import NoConnectException


def prop(name, value):
    p = PropertyValue()
    p.Name = name
    p.Value = value
    return p


pipe, src, dst, filter_name, import_filter = sys.argv[1:6]
local = uno.getComponentContext()
resolver = local.ServiceManager.createInstanceWithContext("com.sun.star.bridge.UnoUrlResolver", local)
deadline = time.monotonic() + 20
while True:
    try:
        ctx = resolver.resolve(f"uno:pipe,name={pipe};urp;StarOffice.ComponentContext")
        break
    except NoConnectException:
        if time.monotonic() > deadline:
            sys.exit("LibreOffice is not answering")
        time.sleep(0.05)
desktop = ctx.ServiceManager.createInstanceWithContext("com.sun.star.frame.Desktop", ctx)
# Hidden, read-only, macros never run (MacroExecutionMode 0 = NEVER_EXECUTE), links never
# updated (UpdateDocMode 0 = NO_UPDATE), and the import filter of the declared format, so
# the content is never taken for another type (HTML would load its images).
name, _, options = import_filter.partition(":")
load = (
    prop("Hidden", True),
    prop("ReadOnly", True),
    prop("MacroExecutionMode", 0),
    prop("UpdateDocMode", 0),
    prop("FilterName", name),
)
if options:
    load += (prop("FilterOptions", options),)
doc = desktop.loadComponentFromURL(uno.systemPathToFileUrl(src), "_blank", 0, load)
if doc is None:
    sys.exit("LibreOffice could not open the document")
try:
    doc.storeToURL(uno.systemPathToFileUrl(dst), (prop("FilterName", filter_name), prop("Overwrite", True)))
finally:
    doc.close(True)
