"""A2D2 label tables: semantic colours, the 38 categories and the 3D box classes.

Facts from the A2D2 dataset documentation (``class_list.json`` and the label3D class strings).
Pure data and small helpers, no torch and no ROS, so the model config, the reader, the synthetic
scene writer and the node all share one table.
"""

import re
from typing import Dict, List, Tuple

#: Index written in semantic id maps for pixels that carry no trainable label.
IGNORE_INDEX = 255

#: The 55 label colours of A2D2 in the order of ``class_list.json``: (hex colour, name).
SEMANTIC_COLOURS: Tuple[Tuple[str, str], ...] = (
    ('#ff0000', 'Car 1'),
    ('#c80000', 'Car 2'),
    ('#960000', 'Car 3'),
    ('#800000', 'Car 4'),
    ('#b65906', 'Bicycle 1'),
    ('#963204', 'Bicycle 2'),
    ('#5a1e01', 'Bicycle 3'),
    ('#5a1e1e', 'Bicycle 4'),
    ('#cc99ff', 'Pedestrian 1'),
    ('#bd499b', 'Pedestrian 2'),
    ('#ef59bf', 'Pedestrian 3'),
    ('#ff8000', 'Truck 1'),
    ('#c88000', 'Truck 2'),
    ('#968000', 'Truck 3'),
    ('#00ff00', 'Small vehicles 1'),
    ('#00c800', 'Small vehicles 2'),
    ('#009600', 'Small vehicles 3'),
    ('#0080ff', 'Traffic signal 1'),
    ('#1e1c9e', 'Traffic signal 2'),
    ('#3c1c64', 'Traffic signal 3'),
    ('#00ffff', 'Traffic sign 1'),
    ('#1edcdc', 'Traffic sign 2'),
    ('#3c9dc7', 'Traffic sign 3'),
    ('#ffff00', 'Utility vehicle 1'),
    ('#ffffc8', 'Utility vehicle 2'),
    ('#e96400', 'Sidebars'),
    ('#6e6e00', 'Speed bumper'),
    ('#808000', 'Curbstone'),
    ('#ffc125', 'Solid line'),
    ('#400040', 'Irrelevant signs'),
    ('#b97a57', 'Road blocks'),
    ('#000064', 'Tractor'),
    ('#8b636c', 'Non-drivable street'),
    ('#d23273', 'Zebra crossing'),
    ('#ff0080', 'Obstacles / trash'),
    ('#fff68f', 'Poles'),
    ('#960096', 'RD restricted area'),
    ('#ccff99', 'Animals'),
    ('#eea2ad', 'Grid structure'),
    ('#212cb1', 'Signal corpus'),
    ('#b432b4', 'Drivable cobblestone'),
    ('#ff46b9', 'Electronic traffic'),
    ('#eee9bf', 'Slow drive area'),
    ('#93fdc2', 'Nature object'),
    ('#9696c8', 'Parking area'),
    ('#b496c8', 'Sidewalk'),
    ('#48d1cc', 'Ego car'),
    ('#c87dd2', 'Painted driv. instr.'),
    ('#9f79ee', 'Traffic guide obj.'),
    ('#8000ff', 'Dashed line'),
    ('#ff00ff', 'RD normal street'),
    ('#87ceff', 'Sky'),
    ('#f1e6ff', 'Buildings'),
    ('#60458f', 'Blurred area'),
    ('#352e52', 'Rain dirt'),
)

#: Categories whose pixels are written as IGNORE_INDEX (not scene content).
IGNORED_CATEGORIES: Tuple[str, ...] = ('Ego car', 'Blurred area', 'Rain dirt')

#: The 14 A2D2 3D box class strings, as they appear in label3D files.
BOX_CLASSES: Tuple[str, ...] = (
    'Car', 'Pedestrian', 'Truck', 'VanSUV', 'Cyclist', 'Bus', 'MotorBiker', 'Bicycle',
    'UtilityVehicle', 'Motorcycle', 'CaravanTransporter', 'Animal', 'Trailer',
    'EmergencyVehicle',
)


def category_of(name: str) -> str:
    """Return the category of an A2D2 colour name ('Car 2' -> 'Car')."""
    return re.sub(r'\s+\d+$', '', name)


def _categories() -> Tuple[str, ...]:
    ordered: List[str] = []
    for _, name in SEMANTIC_COLOURS:
        category = category_of(name)
        if category not in ordered:
            ordered.append(category)
    return tuple(ordered)


#: The 38 semantic categories; a category's id is its index here.
SEMANTIC_CATEGORIES: Tuple[str, ...] = _categories()


def hex_to_rgb(colour: str) -> Tuple[int, int, int]:
    """Return the (r, g, b) of a '#rrggbb' string."""
    return (int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16))


def _palette() -> Tuple[Tuple[int, int, int], ...]:
    first_colour: Dict[str, str] = {}
    for colour, name in SEMANTIC_COLOURS:
        first_colour.setdefault(category_of(name), colour)
    return tuple(hex_to_rgb(first_colour[c]) for c in SEMANTIC_CATEGORIES)


#: One RGB colour per category (the colour of its first instance), for colourised output.
SEMANTIC_PALETTE: Tuple[Tuple[int, int, int], ...] = _palette()
