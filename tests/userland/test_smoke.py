import manybrains as mb


def test_map_squares_in_order():
    assert mb.map(lambda x: x * x, range(1000)) == [x * x for x in range(1000)]


def test_pool_under_each_start_method(start_method):
    offset = 7
    with mb.Pool(2, start_method=start_method) as pool:
        assert pool.map(lambda x: x + offset, [1, 2, 3]) == [8, 9, 10]
