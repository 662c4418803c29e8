import pytest

from pyinstance.train import load_training_set


def test_undecodable_files_are_skipped_and_counted(image_folder):
    root = image_folder(3)
    (root / "item0" / "broken.jpg").write_bytes(b"not a jpeg")
    (root / "item1" / "empty.png").write_bytes(b"")
    data = load_training_set(root, decode_side=32)
    assert len(data) == 3
    assert data.num_classes == 3
    assert sorted(s.path.rsplit("/", 1)[-1] for s in data.skipped) == ["broken.jpg", "empty.png"]
    assert all(max(image.size) <= 32 for image in data.images)
    assert sorted(data.labels) == [0, 1, 2]
    assert [data.instances[label] for label in data.labels] == [p.parent.name for p in data.paths]


def test_a_single_instance_is_refused(image_folder):
    root = image_folder(1, photos=3)
    with pytest.raises(ValueError, match="at least 2 instances, found 1"):
        load_training_set(root)


def test_a_manifest_gives_its_reference_rows(tmp_path, image_folder):
    root = image_folder(2)
    manifest = root / "manifest.csv"
    manifest.write_text(
        "path,instance_id,split\nitem0/photo0.png,a,reference\nitem1/photo0.png,b,reference\n"
        "item1/photo0.png,b,query\n".replace("item1/photo0.png,b,query", "item0/photo0.png,a,query")
    )
    with pytest.raises(ValueError, match="duplicate"):
        load_training_set(manifest)
    manifest.write_text(
        "path,instance_id,split\nitem0/photo0.png,a,reference\nitem1/photo0.png,b,reference\n"
    )
    data = load_training_set(manifest)
    assert data.instances == ("a", "b")
