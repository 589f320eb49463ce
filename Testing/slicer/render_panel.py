"""Render the FAGANSuperRes panel from its .ui file with real Qt 5, outside Slicer (for the README).

No Slicer application runs on the project's machines, so this is not a screenshot of Slicer: the
module's ``Resources/UI/FAGANSuperRes.ui`` is loaded by PyQt5's ``uic`` as Slicer's
``slicer.util.loadUI`` loads it, with each Slicer/CTK custom widget replaced by a labelled placeholder
(ctkCollapsibleButton -> a group box titled "<text> [ctkCollapsibleButton]", MRML selectors -> a
framed label naming the widget). The comboboxes get the entries the module's parameter node puts in
them (read from the module sources), at their defaults. Run in a separate environment with PyQt5:

    QT_QPA_PLATFORM=offscreen /tmp/qtvenv/bin/python Testing/slicer/render_panel.py docs/images/fagan-superres-panel.png
    QT_QPA_PLATFORM=offscreen /tmp/qtvenv/bin/python Testing/slicer/render_panel.py docs/images/fagan-superres-stacks-panel.png stacks

The optional second argument is the mode shown (``in-plane``, the default, or ``stacks``: Combine thick stacks, with
the rows the module builds in code, ``CODE_ROWS``).
"""
import io
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List

from module_source import constants, translatedTable

ROOT = Path(__file__).resolve().parents[2]
UI_FILE = ROOT / "FAGANSuperRes" / "Resources" / "UI" / "FAGANSuperRes.ui"
MODULE_FILE = ROOT / "FAGANSuperRes" / "FAGANSuperRes.py"
PLACEHOLDERS = {"qMRMLNodeComboBox": "QLabel", "qMRMLSubjectHierarchyComboBox": "QLabel"}


def placeholderUi(collapsed: List[str]) -> bytes:
    """The .ui with custom widgets replaced by standard ones that say what they stand for; the names of
    collapsed sections are appended to ``collapsed`` (their contents are hidden when rendered)."""
    tree = ET.parse(UI_FILE)
    root = tree.getroot()
    for widget in root.iter("widget"):
        cls = widget.get("class")
        if cls == "qMRMLWidget":
            widget.set("class", "QWidget")
        elif cls == "ctkCollapsibleButton":
            widget.set("class", "QGroupBox")
            for prop in widget.findall("property"):
                if prop.get("name") == "text":
                    prop.set("name", "title")
                    prop[0].text = f"{prop[0].text}  [ctkCollapsibleButton]"
                elif prop.get("name") == "collapsed":
                    widget.remove(prop)
                    if prop[0].text == "true":
                        collapsed.append(widget.get("name"))
        elif cls in PLACEHOLDERS:
            widget.set("class", PLACEHOLDERS[cls])
            for prop in list(widget.findall("property")):
                if prop.get("name") != "toolTip":
                    widget.remove(prop)
            text = ET.SubElement(widget, "property", name="text")
            ET.SubElement(text, "string").text = f"[{cls}: Slicer widget, not rendered]"
            frame = ET.SubElement(widget, "property", name="frameShape")
            ET.SubElement(frame, "enum").text = "QFrame::Box"
    for element in (root.find("customwidgets"), root.find("connections")):
        if element is not None:
            root.remove(element)
    buffer = io.BytesIO()
    tree.write(buffer, encoding="utf-8", xml_declaration=True)
    return buffer.getvalue()


def comboItems() -> Dict[str, List[str]]:
    """Combobox name -> the entries the module shows (options.py choices, the module's labels)."""
    options = constants(ROOT / "FAGANSuperRes" / "FAGANSuperResLib" / "options.py")
    module = constants(MODULE_FILE)
    modeLabels, ensembleLabels = translatedTable(MODULE_FILE, "modeLabels"), translatedTable(MODULE_FILE, "ensembleLabels")
    return {
        "modeComboBox": [modeLabels[mode] for mode in module["PANEL_MODES"]],
        "scaleComboBox": [str(scale) for scale in options["SCALES"]],
        "methodComboBox": list(options["METHODS"]),
        "acquisitionComboBox": list(options["ACQUISITIONS"]),
        "planeComboBox": list(options["PLANES"]),
        "deviceComboBox": ["Auto (GPU if usable, else CPU)", "GPU (checking...)", "CPU"],
        "ensembleComboBox": [ensembleLabels[members] for members in options["ENSEMBLES"]],
        "checkpointComboBox": ["fagan_x4 (x4, fagan, kspace, bundled)", "Browse..."],  # CheckpointInfo.label
    }


def addCodeRows(panel) -> None:
    """The module's CODE_ROWS below the mode selector, as its widget code inserts them (MRML selectors as placeholders)."""
    from PyQt5 import QtWidgets

    layout = panel.findChild(QtWidgets.QFormLayout, "inputsFormLayout")
    labels, texts = translatedTable(MODULE_FILE, "stackLabels"), translatedTable(MODULE_FILE, "stackRowTexts")
    for row, (name, widgetClass) in enumerate(constants(MODULE_FILE)["CODE_ROWS"].items(), start=2):
        label, tip = texts[name]
        if widgetClass == "QComboBox":
            field = QtWidgets.QComboBox()
            field.addItems(list(labels))
            field.setCurrentIndex(1)
        else:
            field = QtWidgets.QLabel(f"[{widgetClass}: Slicer widget, not rendered]")
            field.setFrameShape(QtWidgets.QFrame.Box)
        field.setToolTip(tip)
        layout.insertRow(row, QtWidgets.QLabel(label), field)


def main(output: str, mode: str = "in-plane") -> int:
    from PyQt5 import QtWidgets, uic

    app = QtWidgets.QApplication(sys.argv[:1])
    collapsed: List[str] = []
    panel = uic.loadUi(io.BytesIO(placeholderUi(collapsed)))
    for name in collapsed:
        box = panel.findChild(QtWidgets.QGroupBox, name)
        box.setTitle(box.title().replace("]", ", collapsed]"))
        for child in box.findChildren(QtWidgets.QWidget):
            child.setVisible(False)
    for name, items in comboItems().items():
        combo = panel.findChild(QtWidgets.QComboBox, name)
        combo.addItems(items)
    panel.findChild(QtWidgets.QComboBox, "scaleComboBox").setCurrentIndex(1)  # the parameter node's default, x4
    panel.findChild(QtWidgets.QCheckBox, "consistencyMapCheckBox").setChecked(True)
    hidden = ["targetSpacing", "sliceThickness"]  # in-plane mode hides the thick-slice rows
    if mode == "stacks":
        addCodeRows(panel)
        panel.findChild(QtWidgets.QComboBox, "modeComboBox").setCurrentIndex(2)
        panel.findChild(QtWidgets.QLabel, "inputVolumeLabel").setText("First stack:")
        hidden += ["scale", "method", "acquisition", "checkpoint", "plane"]
        panel.findChild(QtWidgets.QLabel, "checkpointInfoLabel").setVisible(False)
        panel.findChild(QtWidgets.QCheckBox, "enforceConsistencyCheckBox").setEnabled(False)  # in-plane only
    for name in hidden:
        for widget in panel.findChildren(QtWidgets.QWidget):
            if widget.objectName() in (name + "Label", name + "ComboBox", name + "SpinBox"):
                widget.setVisible(False)
    panel.findChild(QtWidgets.QProgressBar, "progressBar").setVisible(False)
    panel.findChild(QtWidgets.QPushButton, "applyButton").setEnabled(True)
    panel.resize(520, panel.sizeHint().height())
    panel.show()
    app.processEvents()
    return 0 if panel.grab().save(output) else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
